package config

import (
	"fmt"
	"log/slog"
	"time"
)

// Secret is a string that never prints: fmt, logs and --help show it as [redacted]. A field of this
// type named by env var VAR may also be given as a file path in VAR_FILE (mounted Kubernetes secrets).
type Secret string

// Reveal returns the secret value.
func (s Secret) Reveal() string { return string(s) }

// String redacts.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// GoString redacts.
func (s Secret) GoString() string { return s.String() }

// LogValue redacts.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// Bytes is a size in bytes. Its variable takes a whole number of bytes, or a whole number with a binary
// unit as in Kubernetes memory quantities: Ki, Mi, Gi or Ti (512Ki, 64Mi, 1Gi).
type Bytes int64

// Validator is implemented by a config struct with cross-field or range rules. Validate returns nil or
// the problems found, each made with Problem, joined with errors.Join.
type Validator interface {
	Validate() error
}

// FieldError is one configuration problem, naming its variable.
type FieldError struct {
	Var     string
	Problem string
}

func (e *FieldError) Error() string { return e.Var + ": " + e.Problem }

// Problem returns a FieldError for variable name.
func Problem(name, format string, args ...any) error {
	return &FieldError{Var: name, Problem: fmt.Sprintf(format, args...)}
}

// Platform is what Numaflow sets in every udsource container.
type Platform struct {
	Namespace     string        `env:"NUMAFLOW_NAMESPACE" desc:"Set by Numaflow: the pipeline's namespace."`
	Pod           string        `env:"NUMAFLOW_POD" desc:"Set by Numaflow: the pod name."`
	Replica       int           `env:"NUMAFLOW_REPLICA" envDefault:"0" min:"0" max:"65535" desc:"Set by Numaflow: this replica's index; the partition id of every offset."`
	Pipeline      string        `env:"NUMAFLOW_PIPELINE_NAME" desc:"Set by Numaflow: the pipeline name."`
	Vertex        string        `env:"NUMAFLOW_VERTEX_NAME" desc:"Set by Numaflow: the source vertex name."`
	MonoVertex    string        `env:"NUMAFLOW_MONO_VERTEX_NAME" desc:"Set by Numaflow in a MonoVertex (instead of the pipeline and vertex names): its name."`
	ReadBatchSize int           `env:"NUMAFLOW_READ_BATCH_SIZE" envDefault:"500" min:"1" desc:"Set by Numaflow (v1.7+): the vertex's readBatchSize; sizes prefetch."`
	ReadTimeoutMS int           `env:"NUMAFLOW_READ_TIMEOUT_MS" envDefault:"1000" min:"1" desc:"Set by Numaflow (v1.7+): the vertex's read timeout in milliseconds."`
	ContainerType string        `env:"NUMAFLOW_UD_CONTAINER_TYPE" envDefault:"unknown-container" desc:"Set by Numaflow: the container's kind, named in the error numa gets when a handler fails."`
	_             time.Duration // keeps the import used while this file is a stub
}

// NameParts are the parts that name this source among others on a shared broker: the namespace, then
// the pipeline and vertex names, or a MonoVertex's name (which Numaflow sets instead of them); the
// ones that are empty (outside Numaflow) are left out. Connectors join them into default consumer
// names and groups, so two pipelines, two MonoVertices, or one pipeline in two namespaces never share
// them by accident.
func (p Platform) NameParts() []string {
	var out []string
	for _, s := range []string{p.Namespace, p.Pipeline, p.Vertex, p.MonoVertex} {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// MarshalJSON redacts, so a config struct logged as a whole (slog's JSON handler) shows no secret.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + s.String() + `"`), nil }

// MarshalText redacts.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
