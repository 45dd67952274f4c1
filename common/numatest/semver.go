package numatest

import (
	"fmt"
	"strconv"
	"strings"
)

// semver is the part of a semantic version numa compares: major.minor.patch and a pre-release tag.
type semver struct {
	major, minor, patch int
	pre                 string
}

// parseSemver accepts "1.2.3", "v1.2.3", "1.2.3-rc.1" and build metadata ("+..."), which is ignored.
func parseSemver(s string) (semver, error) {
	v := strings.TrimPrefix(strings.TrimSpace(s), "v")
	if i := strings.IndexByte(v, '+'); i >= 0 {
		v = v[:i]
	}
	var out semver
	if i := strings.IndexByte(v, '-'); i >= 0 {
		out.pre = v[i+1:]
		v = v[:i]
		if out.pre == "" {
			return semver{}, fmt.Errorf("parsing version %q: empty pre-release", s)
		}
	}
	parts := strings.Split(v, ".")
	if len(parts) != 3 {
		return semver{}, fmt.Errorf("parsing version %q: want major.minor.patch", s)
	}
	nums := make([]int, 3)
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || p == "" || (len(p) > 1 && p[0] == '0') {
			return semver{}, fmt.Errorf("parsing version %q: bad number %q", s, p)
		}
		nums[i] = n
	}
	out.major, out.minor, out.patch = nums[0], nums[1], nums[2]
	return out, nil
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
