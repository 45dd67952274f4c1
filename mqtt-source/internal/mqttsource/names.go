package mqttsource

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/numaflow-connectors/sources/common/config"
)

// Placeholders of MQTT_SHARE_GROUP and MQTT_CLIENT_ID, filled from the NUMAFLOW_* variables.
const (
	phNamespace = "<namespace>"
	phPipeline  = "<pipeline>"
	phVertex    = "<vertex>"
	phReplica   = "<replica>"
)

// What fills <pipeline> and <vertex> where Numaflow names no pipeline vertex.
const (
	standInPipeline = "mqtt"   // outside Numaflow
	standInVertex   = "source" // outside Numaflow, and a MonoVertex's source
)

// maxReplica is the largest NUMAFLOW_REPLICA (config.Platform): Validate fills <replica> with it to
// check the longest value.
const maxReplica = 65535

// numaflowNames are the platform variables the placeholders come from.
type numaflowNames config.Platform

// values returns what fills each placeholder but <replica>: the namespace, the pipeline and vertex
// names, or a MonoVertex's name and "source"; outside Numaflow (no NUMAFLOW_POD) the stand-ins for
// missing names. Inside Numaflow a missing name stays empty, and missing says which variable would
// fill it.
func (n numaflowNames) values() (vals map[string]string, missing map[string]string) {
	vals = map[string]string{phNamespace: n.Namespace, phPipeline: n.Pipeline, phVertex: n.Vertex}
	missing = map[string]string{}
	switch {
	case n.MonoVertex != "":
		vals[phPipeline], vals[phVertex] = n.MonoVertex, standInVertex
	case n.Pod == "":
		if vals[phPipeline] == "" {
			vals[phPipeline] = standInPipeline
		}
		if vals[phVertex] == "" {
			vals[phVertex] = standInVertex
		}
	default:
		if n.Pipeline == "" {
			missing[phPipeline] = "NUMAFLOW_PIPELINE_NAME"
		}
		if n.Vertex == "" {
			missing[phVertex] = "NUMAFLOW_VERTEX_NAME"
		}
	}
	if n.Pod != "" && n.Namespace == "" {
		missing[phNamespace] = "NUMAFLOW_NAMESPACE"
	}
	return vals, missing
}

// unfilled returns what is wrong when s has placeholders that nothing fills inside Numaflow; "" when
// every placeholder it has can be filled.
func (n numaflowNames) unfilled(s string) string {
	_, missing := n.values()
	var phs, vars []string
	for _, ph := range []string{phNamespace, phPipeline, phVertex} {
		if v, ok := missing[ph]; ok && strings.Contains(s, ph) {
			phs, vars = append(phs, ph), append(vars, v)
		}
	}
	if len(phs) == 0 {
		return ""
	}
	also := ""
	if slices.Contains(phs, phPipeline) || slices.Contains(phs, phVertex) {
		also = " (a MonoVertex: NUMAFLOW_MONO_VERTEX_NAME)"
	}
	verb, it := "is", "it"
	if len(vars) > 1 {
		verb, it = "are", "them"
	}
	return fmt.Sprintf("%q has %s, but inside Numaflow (NUMAFLOW_POD is set) %s%s %s not set: set %s, or set this variable without %s",
		s, strings.Join(phs, " and "), strings.Join(vars, " and "), also, verb, it, strings.Join(phs, " and "))
}

// fill replaces the placeholders of s (see values; <replica> by replica). A placeholder whose value is
// empty (<namespace> outside Numaflow) is left out together with a dash next to it.
func (n numaflowNames) fill(s string, replica int) string {
	vals, _ := n.values()
	var pairs []string
	for _, ph := range []string{phNamespace, phPipeline, phVertex} {
		if vals[ph] == "" {
			s = strings.ReplaceAll(s, ph+"-", "")
			s = strings.ReplaceAll(s, "-"+ph, "")
		}
		pairs = append(pairs, ph, vals[ph])
	}
	return strings.NewReplacer(append(pairs, phReplica, strconv.Itoa(replica))...).Replace(s)
}

// fill is n.fill with the names and the replica of the adapter's platform variables.
func fill(s string, p config.Platform) string {
	return numaflowNames(p).fill(s, p.Replica)
}
