package config

import (
	"reflect"
	"strings"
)

// Var is one environment variable a config struct reads, as its tags declare it. Package envdoc renders
// them as --help and README tables.
type Var struct {
	Name        string // full name, envPrefix included
	Default     string // envDefault; "" when none
	Required    bool
	Secret      bool   // the field is a Secret: may come from Name_FILE, never printed
	Description string // the desc tag; "" when missing
	Field       string // Go path of the field, e.g. "Config.TLS.CAFile", for messages
	// Min and Max are the smallest and largest values the description documents (the min and max
	// tags; "" when the variable has no such bound). configtest.AloneAtBounds checks that each is
	// accepted when it is the only variable set, whatever the defaults of the others.
	Min, Max string
}

// Vars lists the variables of each config struct (a struct value or a pointer to one), in field order,
// recursing into nested and embedded structs with their envPrefix: exactly the variables Load reads.
func Vars(cfgs ...any) []Var {
	var out []Var
	for _, c := range cfgs {
		if c == nil {
			continue
		}
		for _, f := range fields(reflect.TypeOf(c)) {
			out = append(out, Var{
				Name:        f.key,
				Default:     f.def,
				Required:    f.required,
				Secret:      f.secret,
				Description: strings.TrimSpace(f.sf.Tag.Get(descTag)),
				Field:       f.path,
				Min:         f.sf.Tag.Get(minTag),
				Max:         f.sf.Tag.Get(maxTag),
			})
		}
	}
	return out
}
