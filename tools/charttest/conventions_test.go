package charttest

// The values every release shares, after the common chart conventions (issue
// 19): global.imageRegistry, pull Secrets, common labels and annotations, extra
// volumes, envFrom, priority classes, the default anti-affinity and echo's
// autoscaler.

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

var autoscalingSets = []string{"echo.autoscaling.enabled=true", "echo.autoscaling.minReplicas=3", "echo.autoscaling.maxReplicas=7",
	"echo.autoscaling.targetCPUUtilizationPercentage=65"}

// conventionSets sets every value of the conventions at once, on the transport
// with the most workloads (yamux: the token-init Job too).
var conventionSets = []string{
	"transport=yamux", "global.imageRegistry=mirror.corp:5000/hub", "image.registry=ghcr.io/acme",
	`json:global.imagePullSecrets=[{"name":"global-cred"},{"name":"shared"}]`,
	`json:imagePullSecrets=[{"name":"shared"},{"name":"local"}]`,
	"commonLabels.team=rpc", "string:commonLabels.cost-center=42", `commonAnnotations.example\.com/owner=rpc-team`,
	"echo.priorityClassName=rpc-high", "caller.priorityClassName=rpc-low",
	`json:echo.envFrom=[{"configMapRef":{"name":"echo-env"}},{"prefix":"X_","secretRef":{"name":"echo-sec","optional":true}}]`,
	`json:caller.envFrom=[{"secretRef":{"name":"caller-sec"}}]`,
	`json:echo.extraVolumes=[{"name":"scratch","emptyDir":{"sizeLimit":"16Mi"}}]`,
	`json:echo.extraVolumeMounts=[{"name":"scratch","mountPath":"/scratch"}]`,
	`json:caller.extraVolumes=[{"name":"corp-ca","configMap":{"name":"corp-ca"}}]`,
	`json:caller.extraVolumeMounts=[{"name":"corp-ca","mountPath":"/etc/corp-ca","readOnly":true}]`,
}

// podSpecs returns the pod spec of every workload of a render, by Kind/name.
func podSpecs(r *rendered) map[string]corev1.PodSpec {
	specs := map[string]corev1.PodSpec{}
	for n, d := range r.deployments {
		specs["Deployment/"+n] = d.Spec.Template.Spec
	}
	for n, s := range r.statefulsets {
		specs["StatefulSet/"+n] = s.Spec.Template.Spec
	}
	for n, p := range r.pods {
		specs["Pod/"+n] = p.Spec
	}
	for n, j := range r.jobs {
		specs["Job/"+n] = j.Spec.Template.Spec
	}
	return specs
}

// objects renders the chart and returns every object as a map, by Kind/name.
func objects(t *testing.T, sets ...string) map[string]map[string]any {
	t.Helper()
	out, err := run(t, "helm", templateArgs(sets)...)
	if err != nil {
		t.Fatal(err)
	}
	all := map[string]map[string]any{}
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(out, -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		m := map[string]any{}
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			t.Fatalf("rendered YAML does not parse: %v\n%s", err, doc)
		}
		meta, _ := m["metadata"].(map[string]any)
		all[fmt.Sprintf("%v/%v", m["kind"], meta["name"])] = m
	}
	return all
}

// stringMap reads a map of strings (labels, annotations) at path in m.
func stringMap(m map[string]any, path ...string) map[string]string {
	var cur any = m
	for _, p := range path {
		next, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = next[p]
	}
	out := map[string]string{}
	if mm, ok := cur.(map[string]any); ok {
		for k, v := range mm {
			out[k] = fmt.Sprint(v)
		}
	}
	return out
}

// global.imageRegistry prefixes every image; an image's own registry wins over
// image.registry; the pull Secrets of both lists reach every pod, once each.
func TestImageRegistryAndPullSecrets(t *testing.T) {
	r := render(t, conventionSets...)
	specs := podSpecs(r)
	want(t, "workloads", len(specs), 5)
	for name, spec := range specs {
		for _, c := range spec.Containers {
			if !strings.HasPrefix(c.Image, "mirror.corp:5000/hub/kitex-anyconn/") {
				t.Errorf("%s/%s: image %s, want global.imageRegistry's", name, c.Name, c.Image)
			}
		}
		var secrets []string
		for _, s := range spec.ImagePullSecrets {
			secrets = append(secrets, s.Name)
		}
		want(t, name+" imagePullSecrets", secrets, []string{"global-cred", "shared", "local"})
	}

	r = render(t, "transport=yamux", "image.registry=ghcr.io/acme", "etcd.image.registry=quay.io/mirror/", "caller.image.registry=cr.example")
	want(t, "etcd image (its own registry)", r.statefulsets["demo-etcd"].Spec.Template.Spec.Containers[0].Image, "quay.io/mirror/kitex-anyconn/etcd:0.1.0")
	want(t, "echo image (image.registry)", r.deployment(t, "demo-echo").Spec.Template.Spec.Containers[0].Image, "ghcr.io/acme/kitex-anyconn/echo:0.1.0")
	want(t, "token-init image (the caller's registry)", r.jobs["demo-token-init"].Spec.Template.Spec.Containers[0].Image, "cr.example/kitex-anyconn/caller:0.1.0")
	want(t, "test pod image (the caller's registry)", r.pods["demo-test-calls"].Spec.Containers[0].Image, "cr.example/kitex-anyconn/caller:0.1.0")

	for name, spec := range podSpecs(render(t, "transport=yamux")) {
		if spec.ImagePullSecrets != nil {
			t.Errorf("%s: imagePullSecrets %v by default", name, spec.ImagePullSecrets)
		}
	}
}

// commonLabels and commonAnnotations reach every object; the chart's labels,
// a pod's podLabels and an object's own annotations win over them; pod
// templates get the labels, not the annotations.
func TestCommonLabelsAndAnnotations(t *testing.T) {
	sets := append(slices.Clone(conventionSets), "serviceMonitor.enabled=true", "serviceMonitor.labels.release=prom",
		"serviceMonitor.labels.team=monitoring", "echo.autoscaling.enabled=true", "tunnel.websocket.enabled=true",
		"tunnel.ingress.enabled=true", "tunnel.ingress.host=tunnel.example.com", "echo.podLabels.team=echo-pods",
		"echo.service.annotations.example\\.com/owner=echo-team", "caller.podAnnotations.scrape=yes")
	objs := objects(t, sets...)
	if len(objs) < 20 {
		t.Fatalf("only %d objects rendered", len(objs))
	}
	kinds := map[string]bool{}
	for key, o := range objs {
		kinds[strings.Split(key, "/")[0]] = true
		labels, annotations := stringMap(o, "metadata", "labels"), stringMap(o, "metadata", "annotations")
		wantTeam := "rpc"
		if strings.HasPrefix(key, "ServiceMonitor/") {
			wantTeam = "monitoring" // serviceMonitor.labels win over commonLabels
		}
		want(t, key+" label team", labels["team"], wantTeam)
		want(t, key+" label cost-center", labels["cost-center"], "42")
		want(t, key+" label app.kubernetes.io/part-of", labels["app.kubernetes.io/part-of"], "kitex-anyconn")
		wantOwner := "rpc-team"
		if key == "Service/demo-echo" {
			wantOwner = "echo-team" // the object's own annotation wins
		}
		want(t, key+" annotation example.com/owner", annotations["example.com/owner"], wantOwner)
		if tmpl := stringMap(o, "spec", "template", "metadata", "labels"); len(tmpl) > 0 {
			wantPodTeam := "rpc"
			if key == "Deployment/demo-echo" {
				wantPodTeam = "echo-pods"
			}
			want(t, key+" pod label team", tmpl["team"], wantPodTeam)
			if _, ok := stringMap(o, "spec", "template", "metadata", "annotations")["example.com/owner"]; ok {
				t.Errorf("%s: commonAnnotations on the pod template", key)
			}
		}
		if strings.HasSuffix(key, "/demo-token-init") {
			want(t, key+" hook", annotations["helm.sh/hook"], "pre-install,pre-upgrade")
		}
	}
	for _, k := range []string{"Deployment", "StatefulSet", "Job", "Pod", "Service", "ServiceAccount", "NetworkPolicy", "PodDisruptionBudget",
		"Role", "RoleBinding", "Ingress", "ServiceMonitor", "HorizontalPodAutoscaler"} {
		if !kinds[k] {
			t.Errorf("no %s rendered to check; rendered %v", k, slices.Sorted(maps.Keys(kinds)))
		}
	}
	want(t, "test pod hook", stringMap(objs["Pod/demo-test-calls"], "metadata", "annotations")["helm.sh/hook"], "test")

	r := render(t, sets...)
	want(t, "echo pod transport label", r.deployment(t, "demo-echo").Spec.Template.Labels["kitex-anyconn/transport"], "yamux")
	want(t, "caller podAnnotations", r.deployment(t, "demo-caller").Spec.Template.Annotations["scrape"], "yes")
	want(t, "the token Secret's labels", env(r.jobs["demo-token-init"].Spec.Template.Spec.Containers[0])["SECRET_LABELS"],
		"app.kubernetes.io/instance=demo,app.kubernetes.io/name=kitex-anyconn,app.kubernetes.io/part-of=kitex-anyconn,cost-center=42,team=rpc")
	for _, o := range objects(t) {
		if _, ok := stringMap(o, "metadata", "labels")["team"]; ok {
			t.Errorf("%v: label team without commonLabels", o["kind"])
		}
	}
}

// envFrom, extraVolumes, extraVolumeMounts and priorityClassName reach echo's
// and the callers' pods, after the chart's own Secret volumes; the helm test
// pod takes the callers' priority class only.
func TestExtraVolumesEnvFromPriority(t *testing.T) {
	r := render(t, conventionSets...)
	echo, caller := r.deployment(t, "demo-echo").Spec.Template.Spec, r.deployment(t, "demo-caller").Spec.Template.Spec
	want(t, "echo priorityClassName", echo.PriorityClassName, "rpc-high")
	want(t, "caller priorityClassName", caller.PriorityClassName, "rpc-low")
	want(t, "test pod priorityClassName", r.pods["demo-test-calls"].Spec.PriorityClassName, "rpc-low")
	want(t, "etcd priorityClassName", r.statefulsets["demo-etcd"].Spec.Template.Spec.PriorityClassName, "")

	ef := echo.Containers[0].EnvFrom
	if len(ef) != 2 || ef[0].ConfigMapRef == nil || ef[0].ConfigMapRef.Name != "echo-env" || ef[1].Prefix != "X_" ||
		ef[1].SecretRef == nil || ef[1].SecretRef.Name != "echo-sec" || ef[1].SecretRef.Optional == nil || !*ef[1].SecretRef.Optional {
		t.Errorf("echo envFrom %+v", ef)
	}
	if cf := caller.Containers[0].EnvFrom; len(cf) != 1 || cf[0].SecretRef == nil || cf[0].SecretRef.Name != "caller-sec" {
		t.Errorf("caller envFrom %+v", cf)
	}
	names := func(spec corev1.PodSpec) (vols, mounts []string) {
		for _, v := range spec.Volumes {
			vols = append(vols, v.Name)
		}
		for _, m := range spec.Containers[0].VolumeMounts {
			mounts = append(mounts, m.Name+"="+m.MountPath)
		}
		return vols, mounts
	}
	vols, mounts := names(echo)
	want(t, "echo volumes", vols, []string{"tunnel-token", "scratch"})
	want(t, "echo mounts", mounts, []string{"tunnel-token=/etc/kitex-anyconn/tunnel-token", "scratch=/scratch"})
	if echo.Volumes[1].EmptyDir == nil || echo.Volumes[1].EmptyDir.SizeLimit.String() != "16Mi" {
		t.Errorf("echo extra volume %+v", echo.Volumes[1])
	}
	vols, mounts = names(caller)
	want(t, "caller volumes", vols, []string{"tunnel-token", "corp-ca"})
	want(t, "caller mounts", mounts, []string{"tunnel-token=/etc/kitex-anyconn/tunnel-token", "corp-ca=/etc/corp-ca"})
	if !caller.Containers[0].VolumeMounts[1].ReadOnly {
		t.Error("caller extra mount is not read-only as given")
	}
	vols, _ = names(r.pods["demo-test-calls"].Spec)
	want(t, "test pod volumes (no extra ones)", vols, []string{"tunnel-token"})

	// Without Secret volumes (netpoll), the extra ones alone.
	r = render(t, `json:echo.extraVolumes=[{"name":"scratch","emptyDir":{}}]`, `json:echo.extraVolumeMounts=[{"name":"scratch","mountPath":"/scratch"}]`)
	vols, mounts = names(r.deployment(t, "demo-echo").Spec.Template.Spec)
	want(t, "netpoll echo volumes", vols, []string{"scratch"})
	want(t, "netpoll echo mounts", mounts, []string{"scratch=/scratch"})

	r = render(t)
	for _, name := range []string{"demo-echo", "demo-caller"} {
		spec := r.deployment(t, name).Spec.Template.Spec
		if spec.PriorityClassName != "" || spec.Containers[0].EnvFrom != nil || spec.Volumes != nil || spec.Containers[0].VolumeMounts != nil {
			t.Errorf("%s: priorityClassName, envFrom or volumes by default: %+v", name, spec)
		}
	}
}

// echo and the callers spread over nodes by default with a soft pod
// anti-affinity on their own selector labels; an affinity given replaces it.
func TestDefaultAntiAffinity(t *testing.T) {
	r := render(t)
	for _, name := range []string{"demo-echo", "demo-caller"} {
		d := r.deployment(t, name)
		aff := d.Spec.Template.Spec.Affinity
		if aff == nil || aff.PodAntiAffinity == nil || aff.NodeAffinity != nil || aff.PodAffinity != nil ||
			len(aff.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) != 0 ||
			len(aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) != 1 {
			t.Fatalf("%s: affinity %+v, want one preferred pod anti-affinity term", name, aff)
		}
		term := aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0]
		want(t, name+" weight", term.Weight, 100)
		want(t, name+" topologyKey", term.PodAffinityTerm.TopologyKey, "kubernetes.io/hostname")
		want(t, name+" anti-affinity selector (the Deployment's)", term.PodAffinityTerm.LabelSelector.MatchLabels, d.Spec.Selector.MatchLabels)
	}
	if r.statefulsets["demo-etcd"].Spec.Template.Spec.Affinity != nil || r.pods["demo-test-calls"].Spec.Affinity != nil {
		t.Error("etcd or the helm test pod has an affinity by default")
	}

	r = render(t, `json:echo.affinity={"nodeAffinity":{"preferredDuringSchedulingIgnoredDuringExecution":[{"weight":1,"preference":{"matchExpressions":[{"key":"pool","operator":"In","values":["rpc"]}]}}]}}`,
		`json:caller.affinity={"podAntiAffinity":{}}`)
	echo := r.deployment(t, "demo-echo").Spec.Template.Spec.Affinity
	if echo == nil || echo.NodeAffinity == nil || echo.PodAntiAffinity != nil {
		t.Errorf("echo affinity %+v, want the given one only", echo)
	}
	caller := r.deployment(t, "demo-caller").Spec.Template.Spec.Affinity
	if caller == nil || caller.PodAntiAffinity == nil || len(caller.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) != 0 {
		t.Errorf("caller affinity %+v, want none ({podAntiAffinity: {}})", caller)
	}
	if test := r.pods["demo-test-calls"].Spec.Affinity; test == nil || test.PodAntiAffinity == nil {
		t.Errorf("the helm test pod does not take caller.affinity: %+v", test)
	}
}

// echo.autoscaling makes an autoscaling/v2 HorizontalPodAutoscaler on echo's
// CPU, and the Deployment then sets no replicas.
func TestEchoAutoscaling(t *testing.T) {
	r := render(t)
	if len(r.hpas) != 0 {
		t.Errorf("a HorizontalPodAutoscaler by default: %v", r.kinds)
	}
	want(t, "echo replicas without autoscaling", *r.deployment(t, "demo-echo").Spec.Replicas, 2)

	r = render(t, append(slices.Clone(autoscalingSets), "echo.replicas=5")...)
	hpa := r.hpas["demo-echo"]
	if hpa == nil {
		t.Fatalf("no HorizontalPodAutoscaler demo-echo: %v", r.kinds)
	}
	ref := hpa.Spec.ScaleTargetRef
	want(t, "scaleTargetRef", ref.APIVersion+" "+ref.Kind+" "+ref.Name, "apps/v1 Deployment demo-echo")
	want(t, "minReplicas", *hpa.Spec.MinReplicas, 3)
	want(t, "maxReplicas", hpa.Spec.MaxReplicas, 7)
	if len(hpa.Spec.Metrics) != 1 || hpa.Spec.Metrics[0].Resource == nil || hpa.Spec.Metrics[0].Resource.Name != corev1.ResourceCPU ||
		hpa.Spec.Metrics[0].Resource.Target.AverageUtilization == nil || *hpa.Spec.Metrics[0].Resource.Target.AverageUtilization != 65 {
		t.Errorf("HPA metrics %+v, want CPU at 65%%", hpa.Spec.Metrics)
	}
	want(t, "HPA component label", hpa.Labels["app.kubernetes.io/component"], "echo")
	if rep := r.deployment(t, "demo-echo").Spec.Replicas; rep != nil {
		t.Errorf("echo Deployment sets replicas=%d under an autoscaler", *rep)
	}
	want(t, "caller replicas untouched", *r.deployment(t, "demo-caller").Spec.Replicas, 1)

	r = render(t, "echo.enabled=false", "echo.autoscaling.enabled=true")
	if len(r.hpas) != 0 {
		t.Errorf("a HorizontalPodAutoscaler without echo: %v", r.kinds)
	}
}

// Mistakes in the conventions' values stop the install with a message that
// names the value.
func TestConventionsRejected(t *testing.T) {
	cases := []renderFails{
		{[]string{`commonLabels.app\.kubernetes\.io/name=mine`}, "commonLabels.app.kubernetes.io/name is a label the chart sets itself"},
		{[]string{"commonLabels.kitex-anyconn/transport=x"}, "commonLabels.kitex-anyconn/transport is a label the chart sets itself"},
		{[]string{"commonLabels.-team=x"}, `commonLabels: "-team" is not a label key`},
		{[]string{"commonLabels.team=not a value"}, "/commonLabels/team"},
		{[]string{"commonLabels.team=true"}, "/commonLabels/team"},
		{[]string{"commonAnnotations.retries=3"}, "/commonAnnotations/retries"},
		{[]string{"imagePullSecrets={regcred}"}, "/imagePullSecrets/0"},
		{[]string{"global.imagePullSecrets={regcred}"}, "/global/imagePullSecrets/0"},
		{[]string{"global.imagePullSecrets[0].name=Not_A_Name"}, "/global/imagePullSecrets/0/name"},
		{[]string{"global.imageRegistry=a b"}, "/global/imageRegistry"},
		{[]string{"echo.image.registry=a b"}, "/echo/image/registry"},
		{[]string{"echo.envFrom[0].configMap.name=x"}, "/echo/envFrom/0"},
		{[]string{"caller.envFrom[0].secretRef.optional=true"}, "/caller/envFrom/0/secretRef"},
		{[]string{`json:echo.extraVolumes=[{"emptyDir":{}}]`}, "/echo/extraVolumes/0"},
		{[]string{"caller.extraVolumeMounts[0].name=x"}, "/caller/extraVolumeMounts/0"},
		{[]string{"caller.extraVolumeMounts[0].name=x", "caller.extraVolumeMounts[0].mountPath=etc"}, "/caller/extraVolumeMounts/0/mountPath"},
		{[]string{"caller.priorityClassName=High_Priority"}, "/caller/priorityClassName"},
		{[]string{"echo.autoscaling.minReplicas=0"}, "/echo/autoscaling/minReplicas"},
		{[]string{"echo.autoscaling.targetCPUUtilizationPercentage=0"}, "/echo/autoscaling/targetCPUUtilizationPercentage"},
		{[]string{"echo.autoscaling.targetMemory=80"}, "additional properties 'targetMemory' not allowed"},
		{[]string{"echo.autoscaling.enabled=true", "echo.autoscaling.minReplicas=4", "echo.autoscaling.maxReplicas=3"},
			"echo.autoscaling.minReplicas=4 must not exceed echo.autoscaling.maxReplicas=3"},
		{[]string{"echo.autoscaling.enabled=true", "echo.resources.requests.cpu=null"}, "echo.autoscaling.enabled needs echo.resources.requests.cpu"},
	}
	// The error repeats the command line: a message found there proves nothing.
	for _, c := range cases {
		if strings.Contains(strings.Join(c.sets, " "), c.msg) {
			t.Errorf("case %v: its message %q is in its own values", c.sets, c.msg)
		}
	}
	wantRenderErrors(t, cases)
}
