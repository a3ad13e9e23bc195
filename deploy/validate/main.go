// Command validate checks attrib's Kubernetes manifests against the API types they name, as
// strictly as `kubeconform -strict` does against their schemas: every document's apiVersion and
// kind must be one this checker knows, and its body must decode into that kind's Go type (the
// types the API server and the Prometheus Operator use) with no unknown or duplicate field and
// no value of the wrong type (Kustomizations against kustomize's own type).
//
//	go -C deploy/validate run . [FILE ...]   (default: the manifests under deploy/)
//
// It prints one line per document and exits non-zero if any is refused.
package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	kustomize "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/yaml"
)

// kinds maps "apiVersion kind" to a new value of its type.
var kinds = map[string]func() any{
	"v1 ConfigMap":                                  func() any { return &corev1.ConfigMap{} },
	"v1 Service":                                    func() any { return &corev1.Service{} },
	"apps/v1 StatefulSet":                           func() any { return &appsv1.StatefulSet{} },
	"policy/v1 PodDisruptionBudget":                 func() any { return &policyv1.PodDisruptionBudget{} },
	"monitoring.coreos.com/v1 ServiceMonitor":       func() any { return &monitoringv1.ServiceMonitor{} },
	"monitoring.coreos.com/v1 PrometheusRule":       func() any { return &monitoringv1.PrometheusRule{} },
	"monitoring.coreos.com/v1 PodMonitor":           func() any { return &monitoringv1.PodMonitor{} },
	"kustomize.config.k8s.io/v1beta1 Kustomization": func() any { return &kustomize.Kustomization{} },
}

type header struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
}

// documents splits a YAML stream at its `---` lines, dropping empty documents.
func documents(text []byte) [][]byte {
	var out [][]byte
	var cur bytes.Buffer
	flush := func() {
		if len(bytes.TrimSpace(cur.Bytes())) > 0 {
			out = append(out, append([]byte(nil), cur.Bytes()...))
		}
		cur.Reset()
	}
	for _, line := range bytes.SplitAfter(text, []byte("\n")) {
		if t := bytes.TrimRight(line, " \r\n"); bytes.Equal(t, []byte("---")) {
			flush()
			continue
		}
		cur.Write(line)
	}
	flush()
	return out
}

// check returns what is wrong with one document, or "".
func check(doc []byte) (string, string) {
	var h header
	if err := yaml.Unmarshal(doc, &h); err != nil {
		return "?", fmt.Sprintf("not YAML: %v", err)
	}
	id := h.APIVersion + " " + h.Kind
	mk, ok := kinds[id]
	if !ok {
		return id, "unknown apiVersion and kind"
	}
	if h.Kind != "Kustomization" && h.Metadata.Name == "" {
		return id, "metadata.name is missing"
	}
	if err := yaml.UnmarshalStrict(doc, mk()); err != nil {
		return id + " " + h.Metadata.Name, err.Error()
	}
	return id + " " + h.Metadata.Name, ""
}

// defaultFiles lists the manifests of the repository around the working directory.
func defaultFiles() []string {
	root, _ := os.Getwd()
	for {
		if _, err := os.Stat(filepath.Join(root, "deploy", "kubernetes")); err == nil {
			break
		}
		parent := filepath.Dir(root)
		if parent == root {
			return nil
		}
		root = parent
	}
	var files []string
	for _, pattern := range []string{"deploy/kubernetes/*.yaml", "deploy/prometheus/operator/*.yaml"} {
		m, _ := filepath.Glob(filepath.Join(root, pattern))
		files = append(files, m...)
	}
	return files
}

func main() {
	files := os.Args[1:]
	if len(files) == 0 {
		files = defaultFiles()
	}
	if len(files) == 0 {
		fmt.Fprintln(os.Stderr, "validate: no manifests found above the working directory")
		os.Exit(2)
	}
	failed := 0
	for _, f := range files {
		text, err := os.ReadFile(f)
		if err != nil {
			fmt.Fprintf(os.Stderr, "validate: %v\n", err)
			os.Exit(2)
		}
		for i, doc := range documents(text) {
			what, problem := check(doc)
			if problem != "" {
				failed++
				fmt.Printf("REFUSED %s (document %d, %s): %s\n", f, i+1, what, strings.TrimSpace(problem))
			} else {
				fmt.Printf("ok      %s (document %d, %s)\n", f, i+1, what)
			}
		}
	}
	if failed > 0 {
		fmt.Printf("%d document(s) refused\n", failed)
		os.Exit(1)
	}
}
