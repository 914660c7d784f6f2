// Package image builds, checks and prepares the read-only base image that
// every Hearth sandbox runs on: a Debian trixie minbase tree with python3
// and a handful of Debian python packages, made with debootstrap.
//
// Build runs debootstrap in a temporary directory under the data directory
// and renames the finished tree into place, so a half-built tree is never
// used; it condenses debootstrap's output into one progress line per step.
// Ensure builds when no image exists, or when Build made the one there
// from another suite or package list. Validate and Prepare work on any
// tree, including one a user passes with --base. ID names an image for
// snapshot descriptors.
//
// The functions are safe to call from several processes at once: builds
// under one data directory are serialised with a lock file.
package image
