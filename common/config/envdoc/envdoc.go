// Package envdoc renders the environment variables of config structs (config.Vars) as a connector's
// --help text, its README table and a JSON list, and checks that a README's table is up to date.
package envdoc

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/numaflow-connectors/sources/common/config"
)

// Lint reports what makes the generated docs wrong: a variable without a desc tag, a variable declared
// twice, a required variable with a default (required values are never hidden behind defaults).
func Lint(cfgs ...any) error {
	var errs []error
	seen := map[string]string{}
	for _, v := range config.Vars(cfgs...) {
		if v.Description == "" {
			errs = append(errs, fmt.Errorf("%s (%s): missing desc tag", v.Name, v.Field))
		}
		if prev, ok := seen[v.Name]; ok {
			errs = append(errs, fmt.Errorf("%s: declared by both %s and %s", v.Name, prev, v.Field))
		}
		seen[v.Name] = v.Field
		if v.Required && v.Default != "" {
			errs = append(errs, fmt.Errorf("%s (%s): required with a default %q", v.Name, v.Field, v.Default))
		}
	}
	return errors.Join(errs...)
}

// Group is a titled list of variables: one table in --help and in a README.
type Group struct {
	Title string
	Vars  []config.Var
}

// Groups is what --help and every README show for a connector: its own variables (cfg is its config
// struct), then the common ones every connector has, platform variables included.
func Groups(name string, cfg any) []Group {
	return []Group{
		{Title: name, Vars: config.Vars(cfg)},
		{Title: "Common to every connector", Vars: config.Vars(config.Common{})},
	}
}

func secretNote(v config.Var, quote func(string) string) string {
	if !v.Secret {
		return ""
	}
	return "(secret; or " + quote(v.Name+config.FileSuffix) + ")"
}

func joinNonEmpty(parts ...string) string {
	var out []string
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, " ")
}

// helpWidth is the line width --help aims for.
const helpWidth = 120

// WriteHelp prints the --help text of a connector: a usage line, its description, and one table per
// group (name, default, required, description).
func WriteHelp(w io.Writer, name, description string, groups ...Group) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Usage: %s [--help] [--version]\n\n", name)
	if description != "" {
		fmt.Fprintf(&b, "%s\n\n", description)
	}
	b.WriteString("Configured by environment variables only. A secret variable NAME may instead be given as\n" +
		"the path of a file that holds it in NAME_FILE (a mounted Kubernetes secret). Durations take a\n" +
		"unit: 500ms, 30s, 1m30s.\n")
	for _, g := range groups {
		fmt.Fprintf(&b, "\n%s:\n", g.Title)
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  NAME\tDEFAULT\tREQUIRED\tDESCRIPTION")
		defs := make([]string, len(g.Vars))
		nameW, defW := len("NAME"), len("DEFAULT")
		for i, v := range g.Vars {
			defs[i] = v.Default
			if defs[i] == "" {
				defs[i] = "-"
			}
			if v.Secret && v.Default != "" {
				defs[i] = "(hidden)"
			}
			nameW, defW = max(nameW, len(v.Name)), max(defW, len(defs[i]))
		}
		// Keep lines within helpWidth when the other columns leave room for a readable description.
		descW := max(40, helpWidth-(2+nameW+2+defW+2+len("REQUIRED")+2))
		for i, v := range g.Vars {
			def := defs[i]
			req := "no"
			if v.Required {
				req = "yes"
			}
			lines := wrap(joinNonEmpty(v.Description, secretNote(v, func(s string) string { return s })), descW)
			if len(lines) == 0 {
				lines = []string{""}
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", v.Name, def, req, lines[0])
			for _, l := range lines[1:] {
				fmt.Fprintf(tw, "  \t\t\t%s\n", l)
			}
		}
		if err := tw.Flush(); err != nil {
			return fmt.Errorf("writing help: %w", err)
		}
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("writing help: %w", err)
	}
	return nil
}

// wrap splits s into lines of at most width characters, at spaces.
func wrap(s string, width int) []string {
	var lines []string
	var cur strings.Builder
	for _, word := range strings.Fields(s) {
		if cur.Len() > 0 && cur.Len()+1+len(word) > width {
			lines = append(lines, cur.String())
			cur.Reset()
		}
		if cur.Len() > 0 {
			cur.WriteByte(' ')
		}
		cur.WriteString(word)
	}
	if cur.Len() > 0 {
		lines = append(lines, cur.String())
	}
	return lines
}

// Markdown renders the groups as markdown tables for a README (see CheckMarkdown): a bold title, then
// a table of variable, default, required and description.
func Markdown(groups ...Group) string {
	var b strings.Builder
	for i, g := range groups {
		if i > 0 {
			b.WriteString("\n")
		}
		if g.Title != "" {
			fmt.Fprintf(&b, "**%s**\n\n", mdEscape(g.Title))
		}
		b.WriteString("| Variable | Default | Required | Description |\n")
		b.WriteString("| --- | --- | --- | --- |\n")
		for _, v := range g.Vars {
			def := ""
			if v.Default != "" {
				def = mdCode(v.Default)
			}
			if v.Secret && v.Default != "" {
				def = "(hidden)"
			}
			req := "no"
			if v.Required {
				req = "yes"
			}
			desc := joinNonEmpty(mdEscape(v.Description), secretNote(v, mdCode))
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", mdCode(v.Name), def, req, desc)
		}
	}
	return b.String()
}

func mdEscape(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	return strings.Join(strings.Fields(s), " ")
}

// mdCode renders s as inline code; a value with backticks gets a longer fence.
func mdCode(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	fence := "`"
	for strings.Contains(s, fence) {
		fence += "`"
	}
	if strings.HasPrefix(s, "`") || strings.HasSuffix(s, "`") || strings.HasPrefix(s, " ") || strings.HasSuffix(s, " ") {
		return fence + " " + s + " " + fence
	}
	return fence + s + fence
}

// jsonVar is one entry of WriteJSON's list.
type jsonVar struct {
	Name        string `json:"name"`
	Default     string `json:"default"`
	Required    bool   `json:"required"`
	Secret      bool   `json:"secret"`
	Description string `json:"description"`
}

// WriteJSON prints every variable of the groups, in order, as one indented JSON array (--env-json, for
// tools that check manifests).
func WriteJSON(w io.Writer, groups ...Group) error {
	out := []jsonVar{}
	for _, g := range groups {
		for _, v := range g.Vars {
			out = append(out, jsonVar{v.Name, v.Default, v.Required, v.Secret, v.Description})
		}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
