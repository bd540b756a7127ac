// Package deploy holds flowbus's deployment recipes: the Helm chart
// (helm/flowbus), the plain Kubernetes manifests rendered from it
// (kubernetes/) and the systemd unit (systemd/). Its test runs the flowbus
// binary as the chart's DaemonSet does: with the pipeline of the rendered
// ConfigMap, the container's arguments and environment, on a node's
// network, and checks the liveness and readiness probes the DaemonSet
// declares.
package deploy
