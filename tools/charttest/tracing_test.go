package charttest

import (
	"testing"
)

// tracing.* sets the standard OTEL_* variables on echo and caller (and
// nothing without an endpoint), and lets their egress reach the endpoint.
func TestTracingValues(t *testing.T) {
	r := render(t)
	for _, name := range []string{"demo-echo", "demo-caller"} {
		if v, ok := env(r.deployment(t, name).Spec.Template.Spec.Containers[0])["OTEL_EXPORTER_OTLP_ENDPOINT"]; ok {
			t.Errorf("%s: OTEL_EXPORTER_OTLP_ENDPOINT=%q without tracing.otlpEndpoint", name, v)
		}
	}
	r = render(t, "tracing.otlpEndpoint=http://otel-collector.observability:4317", "tracing.protocol=grpc",
		"tracing.sampler=parentbased_traceidratio", "tracing.samplerArg=0.25", "tracing.resourceAttributes=deployment.environment=prod")
	for _, name := range []string{"demo-echo", "demo-caller"} {
		e := env(r.deployment(t, name).Spec.Template.Spec.Containers[0])
		want(t, name+" OTEL_EXPORTER_OTLP_ENDPOINT", e["OTEL_EXPORTER_OTLP_ENDPOINT"], "http://otel-collector.observability:4317")
		want(t, name+" OTEL_EXPORTER_OTLP_PROTOCOL", e["OTEL_EXPORTER_OTLP_PROTOCOL"], "grpc")
		want(t, name+" OTEL_TRACES_SAMPLER", e["OTEL_TRACES_SAMPLER"], "parentbased_traceidratio")
		want(t, name+" OTEL_TRACES_SAMPLER_ARG", e["OTEL_TRACES_SAMPLER_ARG"], "0.25")
		want(t, name+" OTEL_RESOURCE_ATTRIBUTES", e["OTEL_RESOURCE_ATTRIBUTES"], "k8s.namespace.name=prod,k8s.pod.name=$(POD_NAME),deployment.environment=prod")
		np := r.netpols[name]
		found := false
		for _, eg := range np.Spec.Egress {
			for _, p := range eg.Ports {
				found = found || (p.Port.IntValue() == 4317 && len(eg.To) == 0)
			}
		}
		if !found {
			t.Errorf("%s's NetworkPolicy lets no egress reach the OTLP endpoint's port 4317: %+v", name, np.Spec.Egress)
		}
	}
	wantRenderErrors(t, []renderFails{
		{[]string{"tracing.otlpEndpoint=collector:4318"}, "otlpEndpoint"},
		{[]string{"tracing.protocol=http/json"}, "protocol"},
		{[]string{"tracing.sampler=sometimes"}, "sampler"},
		{[]string{"tracing.samplerArg=2"}, "samplerArg"},
	})
}
