package envdoc

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// Markers around the generated table in a README.
const (
	TableStart = "<!-- env-table:start -->"
	TableEnd   = "<!-- env-table:end -->"
)

// UpdateDocsVar set to 1 in a test's environment makes CheckMarkdown rewrite the README instead of
// failing (`make docs` runs `UPDATE_DOCS=1 go test -run TestREADME ./...`).
const UpdateDocsVar = "UPDATE_DOCS"

// CheckMarkdown compares the lines between TableStart and TableEnd in the README at readmePath with
// table (from Markdown) and returns an error with a short diff when they differ. With UPDATE_DOCS=1 in
// the environment it rewrites that section instead and returns nil.
func CheckMarkdown(readmePath string, table string) error {
	return checkMarkdown(readmePath, table, os.Getenv(UpdateDocsVar) == "1")
}

func checkMarkdown(readmePath, table string, update bool) error {
	raw, err := os.ReadFile(readmePath)
	if err != nil {
		return fmt.Errorf("reading %s: %w", readmePath, err)
	}
	lines := strings.Split(string(raw), "\n")
	start, end := -1, -1
	for i, l := range lines {
		switch strings.TrimSpace(l) {
		case TableStart:
			if start >= 0 {
				return fmt.Errorf("checking %s: %s appears twice", readmePath, TableStart)
			}
			start = i
		case TableEnd:
			if start >= 0 && end < 0 {
				end = i
			}
		}
	}
	if start < 0 || end < 0 {
		return fmt.Errorf("checking %s: no section between the lines %s and %s", readmePath, TableStart, TableEnd)
	}
	have := strings.Trim(strings.Join(lines[start+1:end], "\n"), "\n")
	want := strings.Trim(strings.ReplaceAll(table, "\r\n", "\n"), "\n")
	if have == want {
		return nil
	}
	if update {
		out := append(append(append([]string{}, lines[:start+1]...), "", want, ""), lines[end:]...)
		info, err := os.Stat(readmePath)
		if err != nil {
			return fmt.Errorf("updating %s: %w", readmePath, err)
		}
		if err := os.WriteFile(readmePath, []byte(strings.Join(out, "\n")), info.Mode().Perm()); err != nil {
			return fmt.Errorf("updating %s: %w", readmePath, err)
		}
		return nil
	}
	return errors.New(readmePath + ": the environment variable table is out of date; run `make docs` " +
		"(or UPDATE_DOCS=1 go test -run TestREADME ./...):\n" + lineDiff(have, want, 20))
}

// lineDiff returns a unified-style diff of have -> want, at most limit changed lines.
func lineDiff(have, want string, limit int) string {
	a, b := strings.Split(have, "\n"), strings.Split(want, "\n")
	// Longest common subsequence table; READMEs tables are small.
	lcs := make([][]int, len(a)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out []string
	n := 0
	emit := func(s string) {
		if n < limit {
			out = append(out, s)
		}
		n++
	}
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case i < len(a) && j < len(b) && a[i] == b[j]:
			i++
			j++
		case j < len(b) && (i == len(a) || lcs[i][j+1] >= lcs[i+1][j]):
			emit("+ " + b[j])
			j++
		default:
			emit("- " + a[i])
			i++
		}
	}
	if n > limit {
		out = append(out, fmt.Sprintf("... and %d more changed lines", n-limit))
	}
	return strings.Join(out, "\n")
}
