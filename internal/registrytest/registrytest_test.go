package registrytest

import (
	"net/http"
	"strings"
	"testing"
)

func TestStart(t *testing.T) {
	for _, k := range Kinds {
		t.Run(k.Name, func(t *testing.T) {
			r := Start(t, k)
			resp, err := http.Get("http://" + r.Host + "/v2/")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET /v2/: %s", resp.Status)
			}
		})
	}
}

func TestStartWithPassword(t *testing.T) {
	r := StartWithPassword(t, Distribution, "u", "p")
	resp, err := http.Get("http://" + r.Host + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /v2/ without a password: %s, want 401", resp.Status)
	}
}

// A tool that is not installed names the script that installs it.
func TestMissingTool(t *testing.T) {
	if _, err := toolPath("no-such-tool"); err == nil || !strings.Contains(err.Error(), "scripts/install-deps.sh") {
		t.Errorf("toolPath of a missing tool: %v", err)
	}
}
