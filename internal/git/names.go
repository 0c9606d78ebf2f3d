package git

import (
	"errors"
	"fmt"
	"strings"
)

// ErrUnsafeTree marks a commit whose tree cannot be checked out safely: an entry whose name
// would climb out of the checkout or into Git's own folder, two entries of the same name,
// or a symbolic link that points out of the checkout. Retrying cannot help; the repository
// must change.
var ErrUnsafeTree = errors.New("unsafe repository tree")

// unsafeEntry is the error for the entry at p (slash-separated, from the checkout's root).
func unsafeEntry(p, why string) error {
	return fmt.Errorf("%w: entry %q %s: nothing was checked out; remove it from the repository (git rm), rename it, or point the link inside the repository, then push", ErrUnsafeTree, p, why)
}

// ValidateEntryName says whether name, one entry of a Git tree, is safe to create in a
// folder: it must be one path component that is neither the folder itself, its parent,
// nor Git's own folder under any spelling a file system may treat as the same (any case,
// NTFS's trailing dots and spaces and short name, HFS+'s ignored characters).
func ValidateEntryName(name string) error {
	if why := entryNameProblem(name); why != "" {
		return fmt.Errorf("%w: the name %q %s", ErrUnsafeTree, name, why)
	}
	return nil
}

// entryNameProblem says what is wrong with name, or "" when nothing is.
func entryNameProblem(name string) string {
	switch {
	case name == "":
		return "is empty"
	case name == "." || name == "..":
		return "is a reference to a folder, not a name"
	case strings.ContainsAny(name, "/\\"):
		return "holds a path separator"
	case strings.IndexByte(name, 0) >= 0:
		return "holds a NUL byte"
	case isDotGit(name):
		return "names Git's own folder"
	}
	return ""
}

// isDotGit is true for the spellings of .git that Git itself refuses in trees
// (verify_dotfile, is_ntfs_dotgit, is_hfs_dotgit): a checkout read on such a file system
// would find a Git folder that the repository wrote.
func isDotGit(name string) bool {
	// HFS+ ignores some zero-width characters when it compares names.
	name = strings.Map(func(r rune) rune {
		switch {
		case r >= 0x200c && r <= 0x200f, r >= 0x202a && r <= 0x202e, r >= 0x206a && r <= 0x206f, r == 0xfeff:
			return -1
		}
		return r
	}, name)
	lower := strings.ToLower(name)
	// NTFS drops trailing dots and spaces, and knows GIT~1 as the short name of .git.
	trimmed := strings.TrimRight(lower, ". ")
	return trimmed == ".git" || trimmed == "git~1"
}

// checkLinkTarget says whether a symbolic link at depth folders below the checkout's root
// pointing at target stays inside the checkout whatever other links it goes through. A
// link is resolved from the real folder that holds it, and every folder of a checkout is a
// real folder, so it is enough that the target is relative, climbs (with leading ..) no
// higher than the link's depth, and never climbs after going down: links met on the way
// down obey the same rule.
func checkLinkTarget(depth int, target string) error {
	switch {
	case target == "":
		return errors.New("is a symbolic link with an empty target")
	case strings.IndexByte(target, 0) >= 0:
		return errors.New("is a symbolic link whose target holds a NUL byte")
	case strings.HasPrefix(target, "/"):
		return fmt.Errorf("is a symbolic link to the absolute path %q", target)
	}
	up, down := 0, false
	for _, c := range strings.Split(target, "/") {
		switch c {
		case "", ".":
		case "..":
			if down {
				return fmt.Errorf("is a symbolic link to %q, which climbs after going down", target)
			}
			up++
		default:
			down = true
		}
	}
	if up > depth {
		return fmt.Errorf("is a symbolic link to %q, out of the checkout", target)
	}
	return nil
}
