//go:build !unix

package convert

import "io/fs"

// inode is 0 where files have no inode numbers: size and mtime decide.
func inode(fs.FileInfo) uint64 { return 0 }
