// Command hearth-init is pid 1 of every Hearth sandbox. It is a separate,
// tiny binary because it sits on the cold-start path: it starts in about
// 0.5 ms, where re-executing the full hearth binary costs about 8 ms.
//
// GOMAXPROCS is never updated: the runtime would otherwise re-read the
// cgroup's CPU limit every second in every idle sandbox's init.
//
//go:debug updatemaxprocs=0
package main

import (
	"os"

	"github.com/hearth-run/hearth/internal/sandbox/initproc"
)

func main() {
	os.Exit(initproc.Main(os.Args[1:]))
}
