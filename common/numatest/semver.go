package numatest

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// semver is the part of a semantic version numa compares: major.minor.patch and a pre-release tag.
type semver struct {
	major, minor, patch int
	pre                 string
}

// parseSemver reads a version as numa does an SDK's or its own: leading "v"s stripped, then strict
// semantic versioning (Rust's semver crate): "1.2.3", "1.2.3-rc.1", build metadata ("+...", ignored);
// no spaces, no leading zeros, no empty identifiers.
func parseSemver(s string) (semver, error) {
	v := strings.TrimLeft(s, "v")
	var out semver
	if i := strings.IndexByte(v, '+'); i >= 0 {
		if err := identifiers(v[i+1:], false); err != nil {
			return semver{}, fmt.Errorf("parsing version %q: build metadata: %w", s, err)
		}
		v = v[:i]
	}
	if i := strings.IndexByte(v, '-'); i >= 0 {
		out.pre = v[i+1:]
		v = v[:i]
		if err := identifiers(out.pre, true); err != nil {
			return semver{}, fmt.Errorf("parsing version %q: pre-release: %w", s, err)
		}
	}
	parts := strings.Split(v, ".")
	if len(parts) != 3 {
		return semver{}, fmt.Errorf("parsing version %q: want major.minor.patch", s)
	}
	nums, err := numbers(parts)
	if err != nil {
		return semver{}, fmt.Errorf("parsing version %q: %w", s, err)
	}
	out.major, out.minor, out.patch = nums[0], nums[1], nums[2]
	return out, nil
}

// parseMinVersion reads a server info's minimum_numaflow_version as numa does: the version of a ">="
// requirement (Rust's semver crate), which may leave out the patch or the minor number (1.8 is
// 1.8.0) and may not start with "v". Spaces around it are ignored. Wildcards and lists of
// requirements are not read (no SDK writes them).
func parseMinVersion(s string) (semver, error) {
	v := strings.Trim(s, " ")
	if c := strings.Count(v, "."); c < 2 && !strings.ContainsAny(v, "-+") {
		v += strings.Repeat(".0", 2-c)
	}
	if strings.HasPrefix(v, "v") {
		return semver{}, fmt.Errorf("parsing version %q: a requirement's version does not start with v", s)
	}
	return parseSemver(v)
}

func numbers(parts []string) ([]int, error) {
	nums := make([]int, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || p == "" || p[0] == '+' || (len(p) > 1 && p[0] == '0') {
			return nil, fmt.Errorf("bad number %q", p)
		}
		nums[i] = n
	}
	return nums, nil
}

// identifiers checks dot-separated pre-release or build identifiers: not empty, [0-9A-Za-z-] only,
// and numeric pre-release ones without leading zeros.
func identifiers(s string, pre bool) error {
	for _, id := range strings.Split(s, ".") {
		if id == "" {
			return errors.New("empty identifier")
		}
		numeric := true
		for _, r := range id {
			switch {
			case r >= '0' && r <= '9':
			case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r == '-':
				numeric = false
			default:
				return fmt.Errorf("character %q in %q", r, id)
			}
		}
		if pre && numeric && len(id) > 1 && id[0] == '0' {
			return fmt.Errorf("leading zero in %q", id)
		}
	}
	return nil
}

// atLeastStable reports whether v is at least min, a release numa writes as "min-z": any version of
// a later major.minor.patch (its pre-releases too), or min's own release, not its pre-releases.
func (v semver) atLeastStable(min semver) bool {
	mmp := semver{v.major, v.minor, v.patch, ""}
	if c := mmp.compare(min); c != 0 {
		return c > 0
	}
	return v.pre == ""
}

// compare returns -1, 0 or 1. A pre-release sorts before its release; pre-releases compare by their
// dot-separated identifiers (numeric ones numerically, and before alphanumeric ones).
func (a semver) compare(b semver) int {
	for _, d := range [][2]int{{a.major, b.major}, {a.minor, b.minor}, {a.patch, b.patch}} {
		if d[0] != d[1] {
			if d[0] < d[1] {
				return -1
			}
			return 1
		}
	}
	switch {
	case a.pre == b.pre:
		return 0
	case a.pre == "":
		return 1
	case b.pre == "":
		return -1
	}
	ai, bi := strings.Split(a.pre, "."), strings.Split(b.pre, ".")
	for i := 0; i < len(ai) && i < len(bi); i++ {
		if c := compareIdent(ai[i], bi[i]); c != 0 {
			return c
		}
	}
	switch {
	case len(ai) < len(bi):
		return -1
	case len(ai) > len(bi):
		return 1
	}
	return 0
}

func compareIdent(a, b string) int {
	an, aerr := strconv.Atoi(a)
	bn, berr := strconv.Atoi(b)
	switch {
	case aerr == nil && berr == nil:
		switch {
		case an < bn:
			return -1
		case an > bn:
			return 1
		}
		return 0
	case aerr == nil:
		return -1
	case berr == nil:
		return 1
	}
	return strings.Compare(a, b)
}
