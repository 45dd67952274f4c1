// Package config reads a connector's configuration from environment variables (with
// github.com/caarlos0/env/v11 struct tags), validates it, reports every problem at once naming its
// variable, and reads secrets from mounted files (VAR_FILE). Package envdoc renders the same struct
// tags as the --help and README tables.
package config

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	env "github.com/caarlos0/env/v11"
)

// FileSuffix is appended to a Secret's variable name to give the variable naming a file that holds it.
const FileSuffix = "_FILE"

// Errors is every problem found by Load, in the order of the struct's fields, one per FieldError.
type Errors struct {
	Problems []*FieldError
}

// Error lists the problems, one per line.
func (e *Errors) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.As find each *FieldError.
func (e *Errors) Unwrap() []error {
	out := make([]error, len(e.Problems))
	for i, p := range e.Problems {
		out[i] = p
	}
	return out
}

// Load fills dst, a pointer to a struct with caarlos0/env tags, from environ (in os.Environ form;
// the process environment is never read). A field of type Secret named VAR may instead be read from
// the file named by VAR_FILE (a mounted Kubernetes secret; a trailing newline is trimmed). A required
// variable must be set and not empty. After parsing, Validate runs on every nested struct and on dst
// that implements Validator. Every problem is returned at once as an *Errors; a Secret's value never
// appears in it.
func Load(dst any, environ []string) error {
	rv := reflect.ValueOf(dst)
	if rv.Kind() != reflect.Pointer || rv.IsNil() || rv.Elem().Kind() != reflect.Struct {
		return &Errors{Problems: []*FieldError{{Problem: fmt.Sprintf("loading configuration: want a pointer to a struct, got %T", dst)}}}
	}
	fs := fields(rv.Type())
	vars := env.ToMap(environ)
	if vars == nil {
		vars = map[string]string{}
	}
	var probs []*FieldError
	add := func(fe *FieldError) { probs = append(probs, fe) }

	fileFailed := map[string]bool{} // secrets whose _FILE could not be used: no "not set" on top
	// Secrets from files, before parsing, so caarlos0/env sees the value as if it were set directly.
	for _, f := range fs {
		if !f.secret {
			continue
		}
		fileVar := f.key + FileSuffix
		path, hasFile := vars[fileVar]
		if !hasFile || path == "" {
			continue
		}
		if v, ok := vars[f.key]; ok && v != "" {
			add(&FieldError{Var: f.key, Problem: fmt.Sprintf("both %s and %s are set; set only one", f.key, fileVar)})
			fileFailed[f.key] = true
			continue
		}
		b, err := os.ReadFile(path)
		if err != nil {
			add(&FieldError{Var: fileVar, Problem: fmt.Sprintf("reading secret file: %v", err)})
			fileFailed[f.key] = true
			continue
		}
		v := strings.TrimRight(string(b), "\r\n")
		if v == "" {
			add(&FieldError{Var: fileVar, Problem: fmt.Sprintf("secret file %s is empty", path)})
			fileFailed[f.key] = true
			continue
		}
		vars[f.key] = v
	}

	// Parse. OnSet runs just before caarlos0/env parses a field's value, so the parsers below know which
	// variable they are parsing and can name it (and the bad value) in their errors.
	var current string
	funcs := map[reflect.Type]env.ParserFunc{}
	for _, f := range fs {
		for _, t := range leafTypes(f.sf.Type) {
			if p := parserFor(t, &current); p != nil {
				funcs[t] = p
			}
		}
	}
	err := env.ParseWithOptions(dst, env.Options{
		Environment: vars,
		FuncMap:     funcs,
		OnSet:       func(tag string, _ any, _ bool) { current = tag },
	})
	if err != nil {
		for _, e := range flatten(err) {
			if fe := fromEnvError(e, fs); !fileFailed[fe.Var] {
				add(fe)
			}
		}
	}

	// What caarlos0/env lets through: a required variable set to an empty value, and an empty value
	// that means empty (envKeepEmpty) rather than the default.
	for _, f := range fs {
		v, set := vars[f.key]
		if !set || v != "" {
			continue
		}
		if f.required && !f.hasDef && !fileFailed[f.key] {
			add(&FieldError{Var: f.key, Problem: "is required but empty"})
		}
		if f.keepEmpty {
			if fv, err := rv.Elem().FieldByIndexErr(f.index); err == nil && fv.CanSet() {
				fv.SetZero()
			}
		}
	}

	// Validation: nested structs first, then dst. Problems for a variable that already failed to
	// parse are consequences of that failure and are dropped.
	failed := map[string]bool{}
	for _, p := range probs {
		failed[p.Var] = true
		failed[strings.TrimSuffix(p.Var, FileSuffix)] = true
	}
	for _, verr := range validate(rv) {
		for _, e := range flatten(verr) {
			fe := asFieldError(e)
			if failed[fe.Var] && fe.Var != "" {
				continue
			}
			if !slices.ContainsFunc(probs, func(p *FieldError) bool { return *p == *fe }) {
				add(fe)
			}
		}
	}

	if len(probs) == 0 {
		return nil
	}
	order := map[string]int{}
	for i, f := range fs {
		order[f.key] = i
		order[f.key+FileSuffix] = i
	}
	pos := func(p *FieldError) int {
		if i, ok := order[p.Var]; ok {
			return i
		}
		return len(fs)
	}
	slices.SortStableFunc(probs, func(a, b *FieldError) int { return pos(a) - pos(b) })
	return &Errors{Problems: probs}
}

// validate runs Validate on every struct reachable from v (a pointer to a struct) that implements
// Validator, deepest first, dst last.
func validate(v reflect.Value) []error {
	var errs []error
	var visit func(v reflect.Value, depth int)
	visit = func(v reflect.Value, depth int) {
		if depth > 16 {
			return
		}
		if v.Kind() == reflect.Pointer {
			if v.IsNil() {
				return
			}
			v = v.Elem()
		}
		if v.Kind() != reflect.Struct {
			return
		}
		t := v.Type()
		for i := range t.NumField() {
			sf := t.Field(i)
			if !sf.IsExported() {
				continue
			}
			if own, _ := splitTag(sf.Tag.Get("env")); own != "" {
				continue
			}
			fv := v.Field(i)
			if fv.Kind() == reflect.Struct || (fv.Kind() == reflect.Pointer && fv.Type().Elem().Kind() == reflect.Struct) {
				visit(fv, depth+1)
			}
		}
		var val Validator
		if v.CanAddr() {
			val, _ = v.Addr().Interface().(Validator)
		} else {
			val, _ = v.Interface().(Validator)
		}
		if val != nil {
			if err := val.Validate(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	visit(v, 0)
	return errs
}

// flatten returns the leaves of an error tree (errors.Join, caarlos0/env's AggregateError, *Errors).
func flatten(err error) []error {
	if err == nil {
		return nil
	}
	if _, ok := err.(*FieldError); ok {
		return []error{err}
	}
	if u, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range u.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

func asFieldError(err error) *FieldError {
	var fe *FieldError
	if errors.As(err, &fe) {
		return fe
	}
	return &FieldError{Problem: err.Error()}
}

// fromEnvError turns one of caarlos0/env's errors into a FieldError naming its variable.
func fromEnvError(err error, fs []field) *FieldError {
	byName := func(name string, t reflect.Type) (string, bool) {
		var keys []string
		secret := false
		for _, f := range fs {
			if f.sf.Name == name && (t == nil || f.sf.Type == t) {
				keys = append(keys, f.key)
				secret = secret || f.secret
			}
		}
		return strings.Join(keys, " or "), secret
	}
	var (
		pe  env.ParseError
		nse env.VarIsNotSetError
		eve env.EmptyVarError
		lfe env.LoadFileContentError
		npe env.NoParserError
		fe  *FieldError
	)
	switch {
	case errors.As(err, &fe):
		return fe
	case errors.As(err, &pe):
		if fe, ok := pe.Err.(*FieldError); ok { // from parserFor: names the variable already
			return fe
		}
		key, secret := byName(pe.Name, pe.Type)
		if secret {
			return &FieldError{Var: key, Problem: "invalid value"}
		}
		return &FieldError{Var: key, Problem: fmt.Sprintf("invalid value: %v", pe.Err)}
	case errors.As(err, &nse):
		p := "is required but not set"
		for _, f := range fs {
			if f.key == nse.Key && f.secret {
				p = fmt.Sprintf("is required but neither it nor %s%s is set", f.key, FileSuffix)
			}
		}
		return &FieldError{Var: nse.Key, Problem: p}
	case errors.As(err, &eve):
		return &FieldError{Var: eve.Key, Problem: "must not be empty"}
	case errors.As(err, &lfe):
		return &FieldError{Var: lfe.Key, Problem: fmt.Sprintf("reading file: %v", lfe.Err)}
	case errors.As(err, &npe):
		key, _ := byName(npe.Name, npe.Type)
		return &FieldError{Var: key, Problem: fmt.Sprintf("unsupported field type %s (a bug in the connector)", npe.Type)}
	}
	return &FieldError{Problem: err.Error()}
}

// parserFor returns a caarlos0/env parser for t whose errors name the variable being parsed (read from
// *current) and, unless t is a Secret, the bad value. nil for types left to caarlos0/env.
func parserFor(t reflect.Type, current *string) env.ParserFunc {
	secret := t == secretType
	fail := func(v, want string) error {
		if secret {
			return &FieldError{Var: *current, Problem: "invalid value: want " + want}
		}
		return &FieldError{Var: *current, Problem: fmt.Sprintf("invalid value %q: want %s", v, want)}
	}
	conv := func(x any) any { return reflect.ValueOf(x).Convert(t).Interface() }
	switch t {
	case reflect.TypeFor[time.Duration]():
		return func(v string) (any, error) {
			d, err := time.ParseDuration(strings.TrimSpace(v))
			if err != nil {
				return nil, fail(v, "a duration with a unit, such as 30s, 500ms or 1m30s")
			}
			return d, nil
		}
	case reflect.TypeFor[Bytes]():
		return func(v string) (any, error) {
			n, err := parseBytes(v)
			if err != nil {
				return nil, fail(v, "a whole number of bytes, or one with a unit Ki, Mi, Gi or Ti, such as 64Mi")
			}
			return n, nil
		}
	case reflect.TypeFor[url.URL]():
		return func(v string) (any, error) {
			u, err := url.Parse(v)
			if err != nil {
				return nil, fail(v, "a URL")
			}
			return *u, nil
		}
	case reflect.TypeFor[time.Location]():
		return func(v string) (any, error) {
			l, err := time.LoadLocation(v)
			if err != nil {
				return nil, fail(v, "a time zone name such as UTC or Europe/Paris")
			}
			return *l, nil
		}
	}
	if isTextUnmarshaler(t) {
		return nil
	}
	switch t.Kind() {
	case reflect.String:
		return func(v string) (any, error) { return conv(v), nil }
	case reflect.Bool:
		return func(v string) (any, error) {
			b, err := strconv.ParseBool(strings.TrimSpace(v))
			if err != nil {
				return nil, fail(v, "true or false")
			}
			return conv(b), nil
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		bits := t.Bits()
		return func(v string) (any, error) {
			i, err := strconv.ParseInt(strings.TrimSpace(v), 10, bits)
			if err != nil {
				if errors.Is(err, strconv.ErrRange) {
					return nil, fail(v, fmt.Sprintf("an integer that fits in %d bits", bits))
				}
				return nil, fail(v, "an integer")
			}
			return conv(i), nil
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		bits := t.Bits()
		return func(v string) (any, error) {
			i, err := strconv.ParseUint(strings.TrimSpace(v), 10, bits)
			if err != nil {
				if errors.Is(err, strconv.ErrRange) {
					return nil, fail(v, fmt.Sprintf("a non-negative integer that fits in %d bits", bits))
				}
				return nil, fail(v, "a non-negative integer")
			}
			return conv(i), nil
		}
	case reflect.Float32, reflect.Float64:
		bits := t.Bits()
		return func(v string) (any, error) {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), bits)
			if err != nil {
				return nil, fail(v, "a number")
			}
			return conv(f), nil
		}
	}
	return nil
}

// byteUnits are the suffixes a Bytes value may have, as in Kubernetes memory quantities.
var byteUnits = []struct {
	suffix string
	shift  uint
}{{"Ki", 10}, {"Mi", 20}, {"Gi", 30}, {"Ti", 40}}

// parseBytes parses a whole number of bytes, optionally with a binary unit (64Mi). A sign is accepted,
// so that Validate can say what a negative value means.
func parseBytes(v string) (Bytes, error) {
	s := strings.TrimSpace(v)
	var shift uint
	for _, u := range byteUnits {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			s, shift = num, u.shift
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, err
	}
	if n > math.MaxInt64>>shift || n < math.MinInt64>>shift {
		return 0, strconv.ErrRange
	}
	return Bytes(n << shift), nil
}
