package config

import (
	"encoding"
	"reflect"
	"strings"
)

// Struct tags read besides caarlos0/env's own (env, envDefault, envPrefix, envSeparator).
const (
	// descTag documents a variable for --help and the README tables. Every env field needs one.
	descTag = "desc"
	// keepEmptyTag: `envKeepEmpty:"true"` on a field with an envDefault makes a variable that is set
	// but empty mean the empty value (e.g. METRICS_ADDR= disables the metrics server) instead of the
	// default, which is what caarlos0/env does for an empty value.
	keepEmptyTag = "envKeepEmpty"
	// minTag and maxTag give the documented bounds of a variable, as values of the variable (e.g.
	// `min:"1s" max:"12h"`): a test sets each alone and expects it accepted.
	minTag = "min"
	maxTag = "max"
)

var (
	secretType          = reflect.TypeFor[Secret]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// field is one variable of a config struct: a leaf that caarlos0/env fills.
type field struct {
	key       string // full variable name, envPrefix included
	path      string // Go path for messages, e.g. "Common.Platform.Replica"
	index     []int  // for reflect.Value.FieldByIndex
	sf        reflect.StructField
	def       string
	hasDef    bool
	required  bool
	notEmpty  bool
	keepEmpty bool
	secret    bool
}

// fields lists the variables of struct type t in the order caarlos0/env visits them: fields with an
// env tag are variables; struct (and pointer to struct) fields without one are recursed into, with
// their envPrefix added.
func fields(t reflect.Type) []field {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var out []field
	walk(t, "", t.Name(), nil, &out, map[reflect.Type]bool{})
	return out
}

func walk(t reflect.Type, prefix, path string, index []int, out *[]field, seen map[reflect.Type]bool) {
	if seen[t] {
		return // a recursive type; caarlos0/env would not get here either (nil pointer)
	}
	seen[t] = true
	defer delete(seen, t)
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		idx := append(append([]int(nil), index...), i)
		own, opts := splitTag(sf.Tag.Get("env"))
		if own == "-" || hasOpt(opts, "-") {
			continue
		}
		if own == "" {
			ft := sf.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				walk(ft, prefix+sf.Tag.Get("envPrefix"), path+"."+sf.Name, idx, out, seen)
			}
			continue
		}
		def, hasDef := sf.Tag.Lookup("envDefault")
		*out = append(*out, field{
			key:       prefix + own,
			path:      path + "." + sf.Name,
			index:     idx,
			sf:        sf,
			def:       def,
			hasDef:    hasDef,
			required:  hasOpt(opts, "required"),
			notEmpty:  hasOpt(opts, "notEmpty"),
			keepEmpty: sf.Tag.Get(keepEmptyTag) == "true",
			secret:    isSecret(sf.Type),
		})
	}
}

func splitTag(tag string) (string, []string) {
	parts := strings.Split(tag, ",")
	return parts[0], parts[1:]
}

func hasOpt(opts []string, o string) bool {
	for _, x := range opts {
		if x == o {
			return true
		}
	}
	return false
}

// isSecret reports whether t is Secret, *Secret or a slice of them.
func isSecret(t reflect.Type) bool {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	return t == secretType
}

// leafTypes returns the types caarlos0/env will parse strings into for f: the field's type, or the
// element (and key) types of a slice or map, pointers removed.
func leafTypes(t reflect.Type) []reflect.Type {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if isTextUnmarshaler(t) {
		return nil
	}
	switch t.Kind() {
	case reflect.Slice:
		e := t.Elem()
		if e.Kind() == reflect.Pointer {
			e = e.Elem()
		}
		return []reflect.Type{e}
	case reflect.Map:
		return []reflect.Type{t.Key(), t.Elem()}
	}
	return []reflect.Type{t}
}

func isTextUnmarshaler(t reflect.Type) bool {
	return t.Implements(textUnmarshalerType) || reflect.PointerTo(t).Implements(textUnmarshalerType)
}
