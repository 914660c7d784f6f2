// Command hearth is the Hearth worker and its command-line client.
package main

import (
	"os"

	"github.com/hearth-run/hearth/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:]))
}
