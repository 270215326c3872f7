// Package fsmeta reads the metadata of Linux file-system entries into
// tree.Node values at backup time, and creates special files and applies that
// metadata again at restore time.
//
// What this package owns: lstat and everything next to it (symlink targets,
// device numbers, holes of sparse files found with SEEK_DATA/SEEK_HOLE,
// extended attributes and POSIX ACLs, user and group names), creating
// symlinks, FIFOs and device nodes, and setting ownership, mode, xattrs and
// times in the right order. How each kind of entry is represented and restored
// is described in docs/design.md.
//
// What it must never do: read or write file contents, walk folders, decide
// about hard links (engine/walk tracks inodes, using Info.Dev), follow a final
// symlink, log, or panic. Errors from the system are returned wrapped (as
// *fs.PathError where a path is involved), so errors.Is works on the errno.
//
// Only Linux is supported; the package relies on Linux system calls.
package fsmeta
