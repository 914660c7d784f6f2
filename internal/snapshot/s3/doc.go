//go:build !no_s3

// Package s3 is Hearth's remote snapshot store on any S3-compatible object
// store, through github.com/minio/minio-go/v7. It implements
// snapshot.Remote.
//
// A snapshot KEY is stored as PREFIX/KEY/<file> for each of its files and
// PREFIX/KEY/descriptor.json, uploaded last: a descriptor in the store
// marks a complete snapshot. Downloads check every file's size and SHA-256
// against the descriptor while streaming.
//
// The package builds unless the no_s3 tag is set, so binaries that never
// talk to S3 (hearth sim) need not link the client.
//
// A Store is safe for concurrent use.
package s3
