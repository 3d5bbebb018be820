{{/*
Prefix of every resource name: fullnameOverride, else the release name. Components
add their own suffix: <prefix>-echo, <prefix>-caller, <prefix>-etcd.
*/}}
{{- define "kitex-anyconn.prefix" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- end }}

{{- define "kitex-anyconn.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end }}

{{/*
The chart's own labels of every object, as a dict (YAML): commonLabels cannot
replace them (the schema refuses their keys there).
*/}}
{{- define "kitex-anyconn.chartLabels" -}}
{{- dict "helm.sh/chart" (printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_") "app.kubernetes.io/name" (include "kitex-anyconn.name" .) "app.kubernetes.io/instance" .Release.Name "app.kubernetes.io/version" .Chart.AppVersion "app.kubernetes.io/managed-by" .Release.Service "app.kubernetes.io/part-of" "kitex-anyconn" | toYaml -}}
{{- end }}

{{/* Labels of an object that belongs to no component (the ServiceAccount). */}}
{{- define "kitex-anyconn.labels" -}}
{{- include "kitex-anyconn.componentLabels" (dict "root" .) -}}
{{- end }}

{{/* Selector labels of one component: (dict "root" $ "component" "echo"). */}}
{{- define "kitex-anyconn.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kitex-anyconn.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
All labels of one component's objects, as YAML: the chart's and the component's,
then "extra" (a pod template's podLabels), then commonLabels; where two give a key,
the first wins, so neither podLabels nor commonLabels can change what selectors and
NetworkPolicies match: (dict "root" $ "component" "echo" "extra" $labels), component
and extra optional.
*/}}
{{- define "kitex-anyconn.componentLabels" -}}
{{- $labels := include "kitex-anyconn.chartLabels" .root | fromYaml -}}
{{- with .component }}{{ $_ := set $labels "app.kubernetes.io/component" . }}{{ end -}}
{{- $labels = merge $labels (.extra | default dict) (.root.Values.commonLabels | default dict) -}}
{{- toYaml $labels -}}
{{- end }}

{{/*
Labels of one component's pod template: componentLabels, the transport, and the
component's podLabels: (dict "root" $ "component" "echo" "values" .Values.echo).
*/}}
{{- define "kitex-anyconn.podLabels" -}}
{{- $extra := merge (dict "kitex-anyconn/transport" .root.Values.transport) (.values.podLabels | default dict) -}}
{{- include "kitex-anyconn.componentLabels" (dict "root" .root "component" .component "extra" $extra) -}}
{{- end }}

{{/*
metadata.annotations of one object: its own (hooks, a Service's annotations…), then
commonAnnotations, its own winning; empty when both are:
(dict "root" $ "annotations" $own). Pod templates take podAnnotations only, so that
commonAnnotations do not restart pods.
*/}}
{{- define "kitex-anyconn.annotations" -}}
{{- $all := merge (dict) (.annotations | default dict) (.root.Values.commonAnnotations | default dict) -}}
{{- with $all -}}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end -}}
{{- end }}

{{/*
Image reference: (dict "root" $ "image" .Values.echo.image). The registry is
global.imageRegistry, else the image's own registry, else image.registry.
*/}}
{{- define "kitex-anyconn.image" -}}
{{- $registry := (.root.Values.global | default dict).imageRegistry | default .image.registry | default .root.Values.image.registry -}}
{{- $repo := .image.repository -}}
{{- if $registry }}{{ $repo = printf "%s/%s" (trimSuffix "/" $registry) $repo }}{{ end -}}
{{- if .image.digest -}}
{{ $repo }}@{{ .image.digest }}
{{- else -}}
{{ $repo }}:{{ .image.tag | default .root.Values.image.tag | default .root.Chart.AppVersion }}
{{- end -}}
{{- end }}

{{/*
imagePullSecrets of every pod: global.imagePullSecrets, then imagePullSecrets, each
name once; nothing when both are empty.
*/}}
{{- define "kitex-anyconn.imagePullSecrets" -}}
{{- $names := list -}}
{{- range concat ((.Values.global | default dict).imagePullSecrets | default list) (.Values.imagePullSecrets | default list) -}}
{{- $names = append $names .name -}}
{{- end -}}
{{- with $names | uniq -}}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end -}}
{{- end }}

{{- define "kitex-anyconn.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{ default (include "kitex-anyconn.prefix" .) .Values.serviceAccount.name }}
{{- else -}}
{{ default "default" .Values.serviceAccount.name }}
{{- end -}}
{{- end }}

{{/* Name echo registers under in etcd. */}}
{{- define "kitex-anyconn.echoServiceName" -}}
{{- default (printf "%s-echo" (include "kitex-anyconn.prefix" .)) .Values.echo.serviceName -}}
{{- end }}

{{/*
Comma-separated etcd endpoints the services use. The bundled etcd is reached at its
pod's stable DNS name (headless Service), not through the ClusterIP: that name
resolves to the pod itself, so a connection made before kube-proxy has programmed a
new Service cannot go astray.
*/}}
{{- define "kitex-anyconn.etcdEndpoints" -}}
{{- if .Values.etcd.enabled -}}
{{- $prefix := include "kitex-anyconn.prefix" . -}}
{{ $prefix }}-etcd-0.{{ $prefix }}-etcd-headless.{{ .Release.Namespace }}.svc:2379
{{- else -}}
{{ join "," .Values.externalEtcd.endpoints }}
{{- end -}}
{{- end }}

{{/*
"true" when the callers use etcd: they find echo there, unless caller.echoAddresses
names echo's addresses (then they get no ETCD_* variable, no etcd Secret and no
egress to etcd).
*/}}
{{- define "kitex-anyconn.callerUsesEtcd" -}}
{{- if empty .Values.caller.echoAddresses }}true{{ end -}}
{{- end }}

{{/*
"true" when echo uses etcd: it registers there, or with the tunnel finds the gateways
there, unless echo.tunnel.gateways names the gateways (then it gets no ETCD_* variable,
no etcd Secret and no egress to etcd).
*/}}
{{- define "kitex-anyconn.echoUsesEtcd" -}}
{{- $t := include "kitex-anyconn.transport" . | fromYaml -}}
{{- if not (and $t.tunnel .Values.echo.tunnel.gateways) }}true{{ end -}}
{{- end }}

{{/*
"true" when the release has a `helm test` pod: a caller that calls this release's echo,
or the echo of caller.echoAddresses; not an echo with echo.tunnel.gateways, which dials
other gateways than the test pod's.
*/}}
{{- define "kitex-anyconn.testPod" -}}
{{- if or (and .Values.echo.enabled (include "kitex-anyconn.echoUsesEtcd" .)) (not (include "kitex-anyconn.callerUsesEtcd" .)) }}true{{ end -}}
{{- end }}

{{/*
"true" when something in the release uses etcd: echo (it registers there) without
echo.tunnel.gateways, or callers without caller.echoAddresses. Only then must
etcd.enabled or externalEtcd.endpoints say where etcd is.
*/}}
{{- define "kitex-anyconn.needsEtcd" -}}
{{- if or (and .Values.echo.enabled (include "kitex-anyconn.echoUsesEtcd" .)) (and .Values.caller.enabled (include "kitex-anyconn.callerUsesEtcd" .)) }}true{{ end -}}
{{- end }}

{{/*
The transports whose trait is true, comma-separated (for messages):
(dict "root" $ "trait" "http").
*/}}
{{- define "kitex-anyconn.transportsWith" -}}
{{- $names := list -}}
{{- range $name, $traits := include "kitex-anyconn.transports" .root | fromYaml -}}
{{- if get $traits $.trait }}{{ $names = append $names $name }}{{ end -}}
{{- end -}}
{{- $names | sortAlpha | join ", " -}}
{{- end }}

{{/* The transports whose trait http is true, comma-separated (for messages). */}}
{{- define "kitex-anyconn.httpTransports" -}}
{{- include "kitex-anyconn.transportsWith" (dict "root" . "trait" "http") -}}
{{- end }}

{{/*
TCP ports dialed with a list of addresses through a forward proxy, as a JSON list
without repeats: each address's port (ws:// 80 and wss:// 443 when the URL gives
none), and the port of each of the proxy's URLs (80 when it gives none):
(dict "addresses" .Values.caller.echoAddresses "proxy" .Values.caller.proxy).
*/}}
{{- define "kitex-anyconn.addressPorts" -}}
{{- $ports := list -}}
{{- range .addresses -}}
{{- $port := "" -}}
{{- if contains "://" . -}}
{{- $hostport := regexReplaceAll "^[A-Za-z]+://([^/?#]*).*$" . "${1}" -}}
{{- $port = regexFind "[0-9]+$" (regexFind ":[0-9]+$" $hostport) -}}
{{- if not $port }}{{ $port = ternary "443" "80" (hasPrefix "wss://" (lower .)) }}{{ end -}}
{{- else -}}
{{- $port = regexFind "[0-9]+$" . -}}
{{- end -}}
{{- $ports = append $ports (int $port) -}}
{{- end -}}
{{- range list .proxy.httpsProxy .proxy.httpProxy -}}
{{- if . -}}
{{- $hostport := regexReplaceAll "^([A-Za-z]+://)?([^@/]*@)?([^/?#]*).*$" . "${3}" -}}
{{- $port := regexFind "[0-9]+$" (regexFind ":[0-9]+$" $hostport) | default "80" -}}
{{- $ports = append $ports (int $port) -}}
{{- end -}}
{{- end -}}
{{- $ports | uniq | toJson -}}
{{- end }}

{{/* TCP ports the callers dial with caller.echoAddresses (and caller.proxy). */}}
{{- define "kitex-anyconn.echoAddressPorts" -}}
{{- include "kitex-anyconn.addressPorts" (dict "addresses" .Values.caller.echoAddresses "proxy" .Values.caller.proxy) -}}
{{- end }}

{{/* TCP ports echo dials with echo.tunnel.gateways (and echo.proxy). */}}
{{- define "kitex-anyconn.echoGatewayPorts" -}}
{{- include "kitex-anyconn.addressPorts" (dict "addresses" .Values.echo.tunnel.gateways "proxy" .Values.echo.proxy) -}}
{{- end }}

{{/*
HTTPS_PROXY, HTTP_PROXY and NO_PROXY of a forward proxy (caller.proxy, echo.proxy),
those set only.
*/}}
{{- define "kitex-anyconn.proxyEnv" -}}
{{- range $var, $key := dict "HTTPS_PROXY" "httpsProxy" "HTTP_PROXY" "httpProxy" "NO_PROXY" "noProxy" }}
{{- with get $ $key }}
- name: {{ $var }}
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
"true" when the callers' gateways are exposed to agents outside the release: the
<prefix>-tunnel Service is rendered (tunnel.service, or tunnel.ingress in front of it).
*/}}
{{- define "kitex-anyconn.tunnelExposed" -}}
{{- $t := include "kitex-anyconn.transport" . | fromYaml -}}
{{- if and $t.tunnel .Values.caller.enabled (or .Values.tunnel.service.enabled .Values.tunnel.ingress.enabled) }}true{{ end -}}
{{- end }}

{{/*
The addresses the gateways accept handshakes for besides their own, as a JSON list:
tunnel.publicAddresses, and the URL of tunnel.ingress (wss:// with its TLS, ws://
without) when it has a host.
*/}}
{{- define "kitex-anyconn.tunnelPublicAddresses" -}}
{{- $list := .Values.tunnel.publicAddresses | default list -}}
{{- $ing := .Values.tunnel.ingress -}}
{{- if and $ing.enabled $ing.host -}}
{{- $list = append $list (printf "%s://%s%s" (ternary "wss" "ws" $ing.tls.enabled) $ing.host .Values.tunnel.websocket.path) -}}
{{- end -}}
{{- $list | uniq | toJson -}}
{{- end }}

{{/*
What differs between transports, in one place: the templates test these traits,
never a transport's name, so a new transport adds one line here (and its name to
the schema's enum).
  echoListens  echo opens an RPC port (LISTEN_ADDR, the rpc port of its Service)
               and the callers dial it.
  tunnel       echo opens no port: it dials out to a tunnel gateway in each caller
               (the tunnel port, token, TLS and token-init hook; tunnel.* values).
  http         calls go over HTTP: the WebSocket path and origins, TLS as wss
               (websocket.* values), appProtocol ws/wss on the rpc port.
*/}}
{{- define "kitex-anyconn.transports" -}}
netpoll:   {echoListens: true,  tunnel: false, http: false}
gonet:     {echoListens: true,  tunnel: false, http: false}
websocket: {echoListens: true,  tunnel: false, http: true}
yamux:     {echoListens: false, tunnel: true,  http: false}
{{- end }}

{{/*
The traits of .Values.transport, as YAML; a template reads them with
  $t := include "kitex-anyconn.transport" . | fromYaml
then $t.echoListens, $t.tunnel, $t.http. Fails on a transport the dictionary lacks
(the schema's enum rejects it first, unless schema validation is skipped).
*/}}
{{- define "kitex-anyconn.transport" -}}
{{- $all := include "kitex-anyconn.transports" . | fromYaml -}}
{{- if not (hasKey $all .Values.transport) -}}
{{- fail (printf "transport=%v is not one of %s" .Values.transport (keys $all | sortAlpha | join ", ")) -}}
{{- end -}}
{{- get $all .Values.transport | toYaml -}}
{{- end }}

{{- define "kitex-anyconn.tunnelSecretName" -}}
{{- default (printf "%s-tunnel-token" (include "kitex-anyconn.prefix" .)) .Values.tunnel.token.existingSecret -}}
{{- end }}

{{/*
Checks that fail the install with one clear line instead of a broken release.
*/}}
{{- define "kitex-anyconn.validate" -}}
{{- if and (not .Values.etcd.enabled) (empty .Values.externalEtcd.endpoints) (include "kitex-anyconn.needsEtcd" .) -}}
{{- fail "etcd.enabled is false: set externalEtcd.endpoints to the etcd endpoints the services should use (a release of callers only, echo.enabled=false, needs no etcd with caller.echoAddresses; one of echo only, caller.enabled=false, needs none with echo.tunnel.gateways)" -}}
{{- end -}}
{{- $t := include "kitex-anyconn.transport" . | fromYaml -}}
{{- range $name := list "ingress" "httpRoute" -}}
{{- if (get $.Values.echo $name).enabled -}}
{{- if not $t.http -}}
{{- fail (printf "echo.%s.enabled needs a transport over HTTP (%s): transport=%s is not one" $name (include "kitex-anyconn.httpTransports" $) $.Values.transport) -}}
{{- end -}}
{{- if not $.Values.echo.enabled -}}
{{- fail (printf "echo.%s.enabled needs echo.enabled: its backend is this release's echo Service" $name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and .Values.echo.ingress.enabled .Values.echo.ingress.tls.enabled (not .Values.echo.ingress.host) -}}
{{- fail "echo.ingress.tls.enabled needs echo.ingress.host: the name of the TLS entry (and of the rule)" -}}
{{- end -}}
{{- if and .Values.echo.httpRoute.enabled (empty .Values.echo.httpRoute.parentRefs) -}}
{{- fail "echo.httpRoute.enabled needs echo.httpRoute.parentRefs: the Gateway(s) the route attaches to, such as [{name: public, namespace: gateway-system}]" -}}
{{- end -}}
{{- with .Values.caller.echoAddresses -}}
{{- if $t.tunnel -}}
{{- fail (printf "caller.echoAddresses is not for transport=%s: its echo instances dial the callers" $.Values.transport) -}}
{{- end -}}
{{- range . -}}
{{- if and (contains "://" .) (not $t.http) -}}
{{- fail (printf "caller.echoAddresses: %s is a URL, for a transport over HTTP (%s); give host:port with transport=%s" . (include "kitex-anyconn.httpTransports" $) $.Values.transport) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- include "kitex-anyconn.validateTunnel" . -}}
{{- if and .Values.websocket.tls.enabled (not .Values.websocket.tls.existingSecret) -}}
{{- fail "websocket.tls.enabled needs websocket.tls.existingSecret (a Secret with tls.crt, tls.key and ca.crt)" -}}
{{- end -}}
{{- if and .Values.tunnel.tls.mutual (not .Values.tunnel.tls.enabled) -}}
{{- fail "tunnel.tls.mutual needs tunnel.tls.enabled" -}}
{{- end -}}
{{- if and .Values.tunnel.tls.mutual (not .Values.tunnel.tls.existingSecret) -}}
{{- fail "tunnel.tls.mutual needs tunnel.tls.existingSecret (a Secret with the gateway's tls.crt and tls.key and the ca.crt that verifies echo's client certificates)" -}}
{{- end -}}
{{- if and .Values.tunnel.tls.mutual (not .Values.tunnel.tls.clientSecret) -}}
{{- fail "tunnel.tls.mutual needs tunnel.tls.clientSecret (echo's own tls.crt and tls.key, for the DNS name *.<prefix>-echo; not the gateway's key pair)" -}}
{{- end -}}
{{- if gt (int .Values.limits.maxHandshakesPerSource) (int .Values.limits.maxHandshakes) -}}
{{- fail (printf "limits.maxHandshakesPerSource=%v must not exceed limits.maxHandshakes=%v" .Values.limits.maxHandshakesPerSource .Values.limits.maxHandshakes) -}}
{{- end -}}
{{- if and .Values.externalEtcd.tls.enabled (not .Values.externalEtcd.tls.existingSecret) -}}
{{- fail "externalEtcd.tls.enabled needs externalEtcd.tls.existingSecret (a Secret with ca.crt)" -}}
{{- end -}}
{{- if and .Values.externalEtcd.auth.username (not .Values.externalEtcd.auth.existingSecret) -}}
{{- fail "externalEtcd.auth.username needs externalEtcd.auth.existingSecret (a Secret holding the password)" -}}
{{- end -}}
{{- $own := merge (include "kitex-anyconn.chartLabels" . | fromYaml) (dict "app.kubernetes.io/component" "" "kitex-anyconn/transport" "") -}}
{{- range $key, $_ := .Values.commonLabels -}}
{{- if hasKey $own $key -}}
{{- fail (printf "commonLabels.%s is a label the chart sets itself (selectors and NetworkPolicies match the chart's labels): choose another key" $key) -}}
{{- end -}}
{{- if not (regexMatch "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$" $key) -}}
{{- fail (printf "commonLabels: %q is not a label key (an optional DNS prefix and /, then at most 63 letters, digits, - _ . starting and ending with a letter or digit)" $key) -}}
{{- end -}}
{{- end -}}
{{- with .Values.echo.autoscaling -}}
{{- if and .enabled (gt (int .minReplicas) (int .maxReplicas)) -}}
{{- fail (printf "echo.autoscaling.minReplicas=%v must not exceed echo.autoscaling.maxReplicas=%v" .minReplicas .maxReplicas) -}}
{{- end -}}
{{- if and .enabled $.Values.echo.enabled (not ($.Values.echo.resources.requests | default dict).cpu) -}}
{{- fail "echo.autoscaling.enabled needs echo.resources.requests.cpu: the autoscaler's CPU target is a share of it" -}}
{{- end -}}
{{- end -}}
{{- $drain := int .Values.echo.drainDelaySeconds -}}
{{- $stop := int .Values.echo.shutdownTimeoutSeconds -}}
{{- if not (kindIs "invalid" .Values.echo.terminationGracePeriodSeconds) -}}
{{- if lt (int .Values.echo.terminationGracePeriodSeconds) (add $drain $stop 1 | int) -}}
{{- fail (printf "echo.terminationGracePeriodSeconds=%v would kill echo before it drains: it must be at least drainDelaySeconds + shutdownTimeoutSeconds + 1 = %d" .Values.echo.terminationGracePeriodSeconds (add $drain $stop 1)) -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/*
Checks of the tunnel across networks: tunnel.websocket, tunnel.service, tunnel.ingress,
tunnel.publicAddresses and echo.tunnel.
*/}}
{{- define "kitex-anyconn.validateTunnel" -}}
{{- $t := include "kitex-anyconn.transport" . | fromYaml -}}
{{- $v := .Values -}}
{{- $set := dict "tunnel.websocket.enabled" $v.tunnel.websocket.enabled "tunnel.service.enabled" $v.tunnel.service.enabled "tunnel.ingress.enabled" $v.tunnel.ingress.enabled "tunnel.publicAddresses" (not (empty $v.tunnel.publicAddresses)) "echo.tunnel.gateways" (not (empty $v.echo.tunnel.gateways)) "echo.tunnel.wsCA.existingSecret" (not (empty $v.echo.tunnel.wsCA.existingSecret)) -}}
{{- if not $t.tunnel -}}
{{- range $name := keys $set | sortAlpha -}}
{{- if get $set $name -}}
{{- fail (printf "%s needs a tunnel transport (%s): transport=%s is not one" $name (include "kitex-anyconn.transportsWith" (dict "root" $ "trait" "tunnel")) $v.transport) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if $t.tunnel -}}
{{- range $name := list "service" "ingress" -}}
{{- if and (get $v.tunnel $name).enabled (not $v.caller.enabled) -}}
{{- fail (printf "tunnel.%s.enabled needs caller.enabled: its backend is this release's callers' tunnel gateways" $name) -}}
{{- end -}}
{{- end -}}
{{- $ing := $v.tunnel.ingress -}}
{{- if and $ing.enabled (not $v.tunnel.websocket.enabled) -}}
{{- fail "tunnel.ingress.enabled needs tunnel.websocket.enabled: the Ingress's backend is the gateways' WebSocket endpoint (port tunnel-ws)" -}}
{{- end -}}
{{- if and $ing.enabled $ing.tls.enabled (not $ing.host) -}}
{{- fail "tunnel.ingress.tls.enabled needs tunnel.ingress.host: the name of the TLS entry (and of the rule)" -}}
{{- end -}}
{{- if and $ing.enabled (not $ing.host) (not (regexMatch "(^|,)wss?://" (join "," $v.tunnel.publicAddresses))) -}}
{{- fail "tunnel.ingress.enabled without tunnel.ingress.host: list the ws:// or wss:// URL agents dial the Ingress at in tunnel.publicAddresses (the gateways refuse handshakes made for other addresses), or set tunnel.ingress.host" -}}
{{- end -}}
{{- if $v.tunnel.websocket.enabled -}}
{{- range $name, $port := dict "tunnel.port" $v.tunnel.port "caller.adminPort" $v.caller.adminPort -}}
{{- if eq (int $port) (int $v.tunnel.websocket.port) -}}
{{- fail (printf "tunnel.websocket.port=%v is %s already: give the WebSocket endpoint a port of its own" $v.tunnel.websocket.port $name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and $v.echo.tunnel.wsCA.existingSecret (empty $v.echo.tunnel.gateways) -}}
{{- fail "echo.tunnel.wsCA.existingSecret is for echo.tunnel.gateways: the CA of what terminates wss:// gateway URLs (gateways found in etcd are dialed at their pod addresses)" -}}
{{- end -}}
{{- if and $v.echo.enabled $v.echo.tunnel.gateways (not $v.caller.enabled) (not $v.tunnel.token.existingSecret) -}}
{{- fail "echo.tunnel.gateways without callers in this release (caller.enabled=false) needs tunnel.token.existingSecret: a Secret holding the token of the callers' release (its <prefix>-tunnel-token, or its own tunnel.token.existingSecret); the token-init Job would make a token the gateways do not know" -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/* Grace period of echo pods. */}}
{{- define "kitex-anyconn.echoGracePeriod" -}}
{{- if kindIs "invalid" .Values.echo.terminationGracePeriodSeconds -}}
{{ add (int .Values.echo.drainDelaySeconds) (int .Values.echo.shutdownTimeoutSeconds) 5 }}
{{- else -}}
{{ int .Values.echo.terminationGracePeriodSeconds }}
{{- end -}}
{{- end }}

{{/*
Environment both services share: transport, etcd, logging, discovery, tunnel token:
(dict "root" $ "etcd" true). With "etcd" false (callers with caller.echoAddresses),
no ETCD_* variable.
*/}}
{{- define "kitex-anyconn.commonEnv" -}}
{{- $etcd := .etcd -}}
{{- with .root -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: TRANSPORT
  value: {{ .Values.transport | quote }}
{{- with .Values.tracing }}
{{- if .otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .otlpEndpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ .protocol | quote }}
- name: OTEL_TRACES_SAMPLER
  value: {{ .sampler | quote }}
{{- with .samplerArg }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ . | quote }}
{{- end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ printf "k8s.namespace.name=%s,k8s.pod.name=$(POD_NAME)%s" $.root.Release.Namespace (ternary (printf ",%s" .resourceAttributes) "" (ne .resourceAttributes "")) | quote }}
{{- end }}
{{- end }}
{{- if $etcd }}
- name: ETCD_ENDPOINTS
  value: {{ include "kitex-anyconn.etcdEndpoints" . | quote }}
{{- end }}
{{- if and $etcd (not .Values.etcd.enabled) .Values.externalEtcd.tls.enabled }}
- name: ETCD_CA_FILE
  value: /etc/kitex-anyconn/etcd-tls/ca.crt
{{- if .Values.externalEtcd.tls.clientCert }}
- name: ETCD_CERT_FILE
  value: /etc/kitex-anyconn/etcd-tls/tls.crt
- name: ETCD_KEY_FILE
  value: /etc/kitex-anyconn/etcd-tls/tls.key
{{- end }}
{{- with .Values.externalEtcd.tls.serverName }}
- name: ETCD_SERVER_NAME
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- if and $etcd (not .Values.etcd.enabled) .Values.externalEtcd.auth.username }}
- name: ETCD_USERNAME
  value: {{ .Values.externalEtcd.auth.username | quote }}
- name: ETCD_PASSWORD_FILE
  value: /etc/kitex-anyconn/etcd-auth/password
{{- end }}
- name: LOG_LEVEL
  value: {{ .Values.log.level | quote }}
- name: LOG_FORMAT
  value: {{ .Values.log.format | quote }}
- name: DISCOVERY_REFRESH
  value: {{ .Values.discovery.refresh | quote }}
- name: REGISTRY_TTL
  value: {{ .Values.echo.registryTTL | quote }}
- name: MAX_MESSAGE_BYTES
  value: {{ int64 .Values.limits.maxMessageBytes | toString | quote }}
- name: HANDSHAKE_TIMEOUT
  value: {{ .Values.limits.handshakeTimeout | quote }}
- name: MAX_HANDSHAKES
  value: {{ int64 .Values.limits.maxHandshakes | toString | quote }}
- name: MAX_HANDSHAKES_PER_SOURCE
  value: {{ int64 .Values.limits.maxHandshakesPerSource | toString | quote }}
{{- $t := include "kitex-anyconn.transport" . | fromYaml }}
{{- if $t.http }}
- name: WS_PATH
  value: {{ .Values.websocket.path | quote }}
{{- end }}
{{- if $t.tunnel }}
- name: TUNNEL_TOKEN_FILE
  value: /etc/kitex-anyconn/tunnel-token/token
- name: TUNNEL_SERVICE
  value: {{ printf "%s-tunnel" (include "kitex-anyconn.echoServiceName" .) | quote }}
- name: TUNNEL_KEEPALIVE
  value: {{ .Values.tunnel.keepAlive | quote }}
- name: TUNNEL_TLS
  value: {{ ternary "on" "off" .Values.tunnel.tls.enabled | quote }}
{{- end }}
{{- end -}}
{{- end }}

{{/* Environment of a caller (the Deployment and the helm test pod). */}}
{{- define "kitex-anyconn.callerEnv" -}}
{{ include "kitex-anyconn.commonEnv" (dict "root" . "etcd" (include "kitex-anyconn.callerUsesEtcd" .)) }}
- name: ECHO_SERVICE
  value: {{ include "kitex-anyconn.echoServiceName" . | quote }}
- name: ADMIN_ADDR
  value: {{ printf ":%d" (int .Values.caller.adminPort) | quote }}
- name: CALL_TIMEOUT
  value: {{ .Values.caller.callTimeout | quote }}
- name: CALL_MESSAGE
  value: {{ .Values.caller.message | quote }}
- name: CALL_PROTOCOL
  value: {{ .Values.caller.protocol | quote }}
{{- with .Values.caller.echoAddresses }}
- name: ECHO_ADDRESSES
  value: {{ join "," . | quote }}
{{- end }}
{{- $t := include "kitex-anyconn.transport" . | fromYaml }}
{{- if and $t.http .Values.websocket.tls.enabled }}
- name: TLS_CA_FILE
  value: /etc/kitex-anyconn/ws-tls/ca.crt
{{- /* With echoAddresses the name is the dialed host's, unless given. */}}
{{- $serverName := .Values.websocket.tls.serverName }}
{{- if and (not $serverName) (include "kitex-anyconn.callerUsesEtcd" .) }}
{{- $serverName = printf "%s-echo" (include "kitex-anyconn.prefix" .) }}
{{- end }}
{{- with $serverName }}
- name: TLS_SERVER_NAME
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- if $t.http }}
{{- with .Values.caller.websocket }}
{{- range $var, $key := dict "WS_PING_INTERVAL" "pingInterval" "WS_PONG_TIMEOUT" "pongTimeout" "WS_MAX_CONNECTION_AGE" "maxConnectionAge" }}
{{- $d := get $.Values.caller.websocket $key | toString }}
{{- if $d }}
- name: {{ $var }}
  value: {{ $d | quote }}
{{- end }}
{{- end }}
{{- with .headers }}
- name: WS_HEADERS
  value: {{ join "\n" . | quote }}
{{- end }}
{{- if .headersSecret.name }}
- name: WS_HEADERS_FILE
  value: /etc/kitex-anyconn/ws-headers/headers
{{- end }}
{{- end }}
{{- include "kitex-anyconn.proxyEnv" .Values.caller.proxy }}
{{- end }}
{{- if $t.tunnel }}
- name: TUNNEL_LISTEN_ADDR
  value: {{ printf ":%d" (int .Values.tunnel.port) | quote }}
- name: TUNNEL_ADVERTISE_ADDR
  value: {{ printf "$(POD_IP):%d" (int .Values.tunnel.port) | quote }}
{{- if .Values.tunnel.websocket.enabled }}
- name: TUNNEL_WS_LISTEN_ADDR
  value: {{ printf ":%d" (int .Values.tunnel.websocket.port) | quote }}
- name: TUNNEL_WS_PATH
  value: {{ .Values.tunnel.websocket.path | quote }}
{{- end }}
{{- with include "kitex-anyconn.tunnelPublicAddresses" . | fromJsonArray }}
- name: TUNNEL_PUBLIC_ADDRESSES
  value: {{ join "," . | quote }}
{{- end }}
{{- if .Values.tunnel.agentTokens.existingSecret }}
- name: TUNNEL_AGENT_TOKENS_FILE
  value: /etc/kitex-anyconn/agent-tokens/tokens
{{- end }}
{{- if and .Values.tunnel.tls.enabled .Values.tunnel.tls.existingSecret }}
- name: TUNNEL_TLS_CERT_FILE
  value: /etc/kitex-anyconn/tunnel-tls/tls.crt
- name: TUNNEL_TLS_KEY_FILE
  value: /etc/kitex-anyconn/tunnel-tls/tls.key
{{- if .Values.tunnel.tls.mutual }}
- name: TUNNEL_TLS_CA_FILE
  value: /etc/kitex-anyconn/tunnel-tls/ca.crt
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The Secrets a service reads, as one list: (dict "root" $ "component" "echo"|"caller").
Each entry names its volume, where it is mounted (read-only, under
/etc/kitex-anyconn/<name>), and the Secret keys it projects: only those the
component needs, readable by the pod's group only (0440). secretVolumes and
secretMounts both render from it.
*/}}
{{- define "kitex-anyconn.secretList" -}}
{{- $v := .root.Values -}}
{{- $t := include "kitex-anyconn.transport" .root | fromYaml -}}
{{- $caller := ne .component "echo" -}}
{{- $list := list -}}
{{- if $t.tunnel }}
{{- $list = append $list (dict "name" "tunnel-token" "sources" (list (dict "secret" (include "kitex-anyconn.tunnelSecretName" .root) "items" (list (dict "key" $v.tunnel.token.key "path" "token"))))) }}
{{- if and $caller $v.tunnel.agentTokens.existingSecret }}
{{- $list = append $list (dict "name" "agent-tokens" "sources" (list (dict "secret" $v.tunnel.agentTokens.existingSecret "items" (list (dict "key" $v.tunnel.agentTokens.key "path" "tokens"))))) }}
{{- end }}
{{- if and $v.tunnel.tls.enabled $v.tunnel.tls.existingSecret }}
{{- $sources := list }}
{{- if $caller }}
{{- $keys := list "tls.crt" "tls.key" }}
{{- if $v.tunnel.tls.mutual }}{{ $keys = append $keys "ca.crt" }}{{ end }}
{{- $sources = append $sources (dict "secret" $v.tunnel.tls.existingSecret "keys" $keys) }}
{{- else }}
{{- $sources = append $sources (dict "secret" $v.tunnel.tls.existingSecret "keys" (list "ca.crt")) }}
{{- if $v.tunnel.tls.mutual }}
{{- $sources = append $sources (dict "secret" $v.tunnel.tls.clientSecret "keys" (list "tls.crt" "tls.key")) }}
{{- end }}
{{- end }}
{{- $list = append $list (dict "name" "tunnel-tls" "projected" true "sources" $sources) }}
{{- end }}
{{- if and (not $caller) $v.echo.tunnel.wsCA.existingSecret }}
{{- $list = append $list (dict "name" "tunnel-ws-ca" "sources" (list (dict "secret" $v.echo.tunnel.wsCA.existingSecret "items" (list (dict "key" $v.echo.tunnel.wsCA.key "path" "ca.crt"))))) }}
{{- end }}
{{- end }}
{{- if and $t.http $v.websocket.tls.enabled }}
{{- $list = append $list (dict "name" "ws-tls" "sources" (list (dict "secret" $v.websocket.tls.existingSecret "keys" (ternary (list "ca.crt") (list "tls.crt" "tls.key") $caller)))) }}
{{- end }}
{{- if and $caller $t.http $v.caller.websocket.headersSecret.name }}
{{- $list = append $list (dict "name" "ws-headers" "sources" (list (dict "secret" $v.caller.websocket.headersSecret.name "items" (list (dict "key" $v.caller.websocket.headersSecret.key "path" "headers"))))) }}
{{- end }}
{{- $etcd := ternary (include "kitex-anyconn.callerUsesEtcd" .root) (include "kitex-anyconn.echoUsesEtcd" .root) $caller }}
{{- if and $etcd (not $v.etcd.enabled) $v.externalEtcd.tls.enabled }}
{{- $keys := list "ca.crt" }}
{{- if $v.externalEtcd.tls.clientCert }}{{ $keys = concat $keys (list "tls.crt" "tls.key") }}{{ end }}
{{- $list = append $list (dict "name" "etcd-tls" "sources" (list (dict "secret" $v.externalEtcd.tls.existingSecret "keys" $keys))) }}
{{- end }}
{{- if and $etcd (not $v.etcd.enabled) $v.externalEtcd.auth.username }}
{{- $list = append $list (dict "name" "etcd-auth" "sources" (list (dict "secret" $v.externalEtcd.auth.existingSecret "items" (list (dict "key" $v.externalEtcd.auth.passwordKey "path" "password"))))) }}
{{- end }}
{{- toJson $list -}}
{{- end }}

{{/* items of one source of secretList: its keys at their own names, or its items. */}}
{{- define "kitex-anyconn.secretItems" -}}
{{- if .items }}
{{- toYaml .items }}
{{- else }}
{{- range .keys }}
- key: {{ . }}
  path: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{/* Volumes of secretList; nothing when it is empty. */}}
{{- define "kitex-anyconn.secretVolumes" -}}
{{- range (include "kitex-anyconn.secretList" . | fromJsonArray) }}
- name: {{ .name }}
{{- if .projected }}
  projected:
    defaultMode: 0440
    sources:
      {{- range .sources }}
      - secret:
          name: {{ .secret }}
          items:
            {{- include "kitex-anyconn.secretItems" . | trim | nindent 12 }}
      {{- end }}
{{- else }}
{{- with index .sources 0 }}
  secret:
    secretName: {{ .secret }}
    defaultMode: 0440
    items:
      {{- include "kitex-anyconn.secretItems" . | trim | nindent 6 }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Mounts of secretList, read-only. */}}
{{- define "kitex-anyconn.secretMounts" -}}
{{- range (include "kitex-anyconn.secretList" . | fromJsonArray) }}
- name: {{ .name }}
  mountPath: /etc/kitex-anyconn/{{ .name }}
  readOnly: true
{{- end }}
{{- end }}

{{/* Pod-level settings shared by every workload. */}}
{{- define "kitex-anyconn.podCommon" -}}
serviceAccountName: {{ include "kitex-anyconn.serviceAccountName" . }}
automountServiceAccountToken: false
enableServiceLinks: false
{{- with include "kitex-anyconn.imagePullSecrets" . }}
{{ . }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{/*
Scheduling settings of one component's pods: (dict "root" $ "values" .Values.echo
"component" "echo"). With a component and no affinity of the user's, a soft pod
anti-affinity spreads its pods over nodes (preferred, so that a one-node cluster
still runs them all); the user's affinity replaces it whole. Without a component
(etcd, the helm test pod), only what the values give.
*/}}
{{- define "kitex-anyconn.scheduling" -}}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if .values.affinity }}
affinity:
  {{- toYaml .values.affinity | nindent 2 }}
{{- else if .component }}
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "kitex-anyconn.selectorLabels" (dict "root" .root "component" .component) | nindent 14 }}
{{- end }}
{{- with .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* NetworkPolicy rule for an admin or metrics port: (dict "root" $ "port" 9090). */}}
{{- define "kitex-anyconn.netpolMetrics" -}}
- ports:
    - port: {{ .port }}
      protocol: TCP
  {{- with .root.Values.networkPolicy.metricsFrom }}
  from:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/* Egress every service needs: DNS and etcd. */}}
{{- define "kitex-anyconn.netpolBaseEgress" -}}
{{ include "kitex-anyconn.netpolDNSEgress" . }}
{{ include "kitex-anyconn.netpolEtcdEgress" . }}
{{- with .Values.tracing.otlpEndpoint }}
{{- $u := urlParse . }}
{{- $port := ternary "443" "80" (eq $u.scheme "https") }}
{{- if regexMatch ":[0-9]+$" $u.host }}{{ $port = regexFind "[0-9]+$" $u.host }}{{ end }}
# the OTLP endpoint (tracing.otlpEndpoint)
- ports:
    - port: {{ $port }}
      protocol: TCP
{{- end }}
{{- end }}

{{- define "kitex-anyconn.netpolDNSEgress" -}}
# DNS
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end }}

{{- define "kitex-anyconn.netpolEtcdEgress" -}}
# etcd
{{- if .Values.etcd.enabled }}
- to:
    - podSelector:
        matchLabels:
          app.kubernetes.io/instance: {{ .Release.Name }}
          app.kubernetes.io/component: etcd
  ports:
    - port: 2379
      protocol: TCP
{{- else }}
- ports:
    {{- range .Values.networkPolicy.externalEtcdPorts }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
{{- end }}
{{- end }}
