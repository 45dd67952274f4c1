// Package configtest holds test helpers for connector configuration: every variable is documented,
// and a README's environment variable table matches the code.
package configtest

import (
	"errors"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/numaflow-connectors/sources/common/config"
	"github.com/numaflow-connectors/sources/common/config/envdoc"
)

// Documented fails t when a variable of cfgs has no desc tag, is declared twice, or is required with a
// default.
func Documented(t testing.TB, cfgs ...any) {
	t.Helper()
	if err := envdoc.Lint(cfgs...); err != nil {
		t.Errorf("configuration docs:\n%v", err)
	}
}

// README fails t when the env table in the README at path differs from groups (with UPDATE_DOCS=1 set
// it rewrites the table instead). A connector's TestREADME is one line:
//
//	configtest.README(t, "../../README.md", envdoc.Groups("sqs-source", sqssource.Config{})...)
func README(t testing.TB, path string, groups ...envdoc.Group) {
	t.Helper()
	for _, g := range groups {
		for _, v := range g.Vars {
			if v.Description == "" {
				t.Errorf("%s (%s): missing desc tag", v.Name, v.Field)
			}
		}
	}
	if err := envdoc.CheckMarkdown(path, envdoc.Markdown(groups...)); err != nil {
		t.Error(err)
	}
}

// Vars returns the variables that err's problems name, sorted (nil for a nil err). It fails t when a
// problem is not a *config.FieldError: every configuration error must name its variable.
func Vars(t testing.TB, err error) []string {
	t.Helper()
	var vars []string
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		var fe *config.FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("problem %v is not a config.FieldError", e)
		}
		vars = append(vars, fe.Var)
	}
	if err != nil {
		walk(err)
	}
	sort.Strings(vars)
	return vars
}

// AloneAtBounds loads a fresh value of cfg's type from base (the required variables) plus one
// variable at a time set to its documented minimum and then its maximum (the min and max tags), and
// fails t when one is refused. It catches a default that makes a documented value invalid: only a
// value the user set explicitly may conflict with another. It also fails when cfg documents no bound,
// so a connector's test cannot pass vacuously.
func AloneAtBounds(t testing.TB, cfg any, base ...string) {
	t.Helper()
	typ := reflect.TypeOf(cfg)
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	checked := 0
	for _, v := range config.Vars(cfg) {
		for _, bound := range []struct{ name, value string }{{"minimum", v.Min}, {"maximum", v.Max}} {
			if bound.value == "" {
				continue
			}
			checked++
			environ := append(slices.Clone(base), v.Name+"="+bound.value)
			if err := config.Load(reflect.New(typ).Interface(), environ); err != nil {
				t.Errorf("%s=%s (its documented %s) set alone is refused:\n%v", v.Name, bound.value, bound.name, err)
			}
		}
	}
	if checked == 0 {
		t.Errorf("%s documents no bound (min or max tag) to check", typ)
	}
}

// Problems fails t unless err reports exactly what a table case wants: no error when want is empty,
// else every substring of want; and no problem may echo one of secrets.
func Problems(t testing.TB, err error, want []string, secrets ...string) {
	t.Helper()
	if len(want) == 0 {
		if err != nil {
			t.Fatalf("unexpected problems: %v", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("no problem reported, want %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("problems %q do not include %q", err, w)
		}
	}
	for _, s := range secrets {
		if strings.Contains(err.Error(), s) {
			t.Errorf("a problem echoes a credential: %v", err)
		}
	}
}
