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

// The ReferrersAPI registry serves the referrers API (an OCI index, empty
// for a manifest nothing refers to) and logs the request; the others do
// not serve it.
func TestReferrersAPI(t *testing.T) {
	for _, k := range Kinds {
		t.Run(k.Name, func(t *testing.T) {
			r := Start(t, k)
			// The API answers for a repository that exists (the others
			// answer 404 whatever exists).
			const empty = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`
			if r.Referrers {
				put(t, "http://"+r.Host+"/v2/t/blobs/uploads/?digest=sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", "POST", "application/octet-stream", "{}")
				put(t, "http://"+r.Host+"/v2/t/manifests/v1", "PUT", "application/vnd.oci.image.manifest.v1+json", empty)
			}
			resp, err := http.Get("http://" + r.Host + "/v2/t/referrers/sha256:" + strings.Repeat("0", 64))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			served := resp.StatusCode == http.StatusOK && resp.Header.Get("Content-Type") == "application/vnd.oci.image.index.v1+json"
			if served != r.Referrers {
				t.Errorf("GET /v2/t/referrers/…: %s %q; Referrers is %v", resp.Status, resp.Header.Get("Content-Type"), r.Referrers)
			}
			if r.Referrers && !strings.Contains(r.Log(t), "GET /v2/t/referrers/") {
				t.Errorf("the request is not in the log:\n%s", r.Log(t))
			}
		})
	}
}

func put(t *testing.T, url, method, contentType, body string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("%s %s: %s", method, url, resp.Status)
	}
}
