package server

import (
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/slurmkube/slurm-vk/fetch/layout"
	"github.com/slurmkube/slurm-vk/internal/testenv"
)

// owner is who owns path, by number.
func owner(t *testing.T, path string) (uid, gid int, mode os.FileMode) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return int(st.Uid), int(st.Gid), fi.Mode().Perm()
}

// TestPodDirectoriesBelongToTheirUser: a pod directory, its staging and
// work folders and what is staged in it belong to the user the create
// names, closed to every other (0700); users the endpoint does not list,
// and a directory that already belongs to another user, are refused.
func TestPodDirectoriesBelongToTheirUser(t *testing.T) {
	testenv.NeedRoot(t, "hand directories to users")
	alice, bob := Owner{UID: 2001, GID: 2001}, Owner{UID: 2002, GID: 2002}
	e := newEnv(t, func(c *Config) { c.Users = map[string]Owner{"alice": alice, "bob": bob} })
	pod := podURL(testPod)

	if code, _, body := e.do("PUT", pod+"?user=mallory", nil); code != 403 {
		t.Errorf("create for an unlisted user: %d %s, want 403", code, body)
	}
	if _, err := os.Stat(filepath.Join(e.root, testPod.Dir())); err == nil {
		t.Error("an unlisted user's create left a directory")
	}
	if code, _, body := e.do("PUT", pod+"?user=alice", nil); code != 204 {
		t.Fatalf("create for alice: %d %s", code, body)
	}
	if code, _, body := e.do("PUT", pod+"/files/secret/password?mode=0600", []byte("hunter2")); code != 204 {
		t.Fatalf("stage: %d %s", code, body)
	}
	dir := filepath.Join(e.root, testPod.Dir())
	for _, c := range []struct {
		path string
		mode os.FileMode
	}{
		{dir, 0o700},
		{filepath.Join(dir, layout.StagedDir), 0o700},
		{filepath.Join(dir, layout.WorkDir), 0o700},
		{filepath.Join(dir, layout.StagedDir, "secret", "password"), 0o600},
	} {
		uid, gid, mode := owner(t, c.path)
		if uid != alice.UID || gid != alice.GID || mode != c.mode {
			t.Errorf("%s: %d:%d %04o, want %d:%d %04o", c.path, uid, gid, mode, alice.UID, alice.GID, c.mode)
		}
	}
	// Created again (a retry) for alice: fine. For bob: the directory is
	// alice's, and stays so.
	if code, _, body := e.do("PUT", pod+"?user=alice", nil); code != 204 {
		t.Errorf("create again for alice: %d %s", code, body)
	}
	if code, _, body := e.do("PUT", pod+"?user=bob", nil); code != 409 {
		t.Errorf("create for bob over alice's directory: %d %s, want 409", code, body)
	}
	if uid, _, _ := owner(t, dir); uid != alice.UID {
		t.Errorf("the directory now belongs to %d", uid)
	}
}

// TestClientsReachOnlyTheirUsers: a client with its own token creates,
// reads, stages into and deletes only the pods of its own users.
func TestClientsReachOnlyTheirUsers(t *testing.T) {
	testenv.NeedRoot(t, "hand directories to users")
	alice, bob := Owner{UID: 2001, GID: 2001}, Owner{UID: 2002, GID: 2002}
	nodeB := filepath.Join(t.TempDir(), "node-b")
	os.WriteFile(nodeB, []byte("node-b-token"), 0o600)
	e := newEnv(t, func(c *Config) {
		c.Users = map[string]Owner{"alice": alice, "bob": bob}
		c.Clients = []Client{{Name: "node-b", TokenFile: nodeB, Users: []string{"bob"}}}
	})
	asB := func(method, path string) int {
		t.Helper()
		req, _ := http.NewRequest(method, e.http.URL+path, nil)
		req.Header.Set("Authorization", "Bearer node-b-token")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	alicePod := podURL(testPod)
	if code, _, body := e.do("PUT", alicePod+"?user=alice", nil); code != 204 {
		t.Fatalf("the default client creates alice's pod: %d %s", code, body)
	}
	e.writeLog("main", 0, "alice's output\n", intp(0))
	for _, r := range []struct{ method, path string }{
		{"GET", alicePod + "/containers/main/log"},
		{"GET", alicePod + "/containers/main/info"},
		{"PUT", alicePod + "/files/x"},
		{"DELETE", alicePod + "/files"},
		{"DELETE", alicePod},
		{"PUT", alicePod + "?user=bob"},
		{"PUT", podURL(layout.Pod{Namespace: "b", Name: "p", UID: "u1"}) + "?user=alice"},
	} {
		if code := asB(r.method, r.path); code != 403 {
			t.Errorf("node-b: %s %s = %d, want 403", r.method, r.path, code)
		}
	}
	if _, err := os.Stat(filepath.Join(e.root, testPod.Dir(), "main", "0.log")); err != nil {
		t.Errorf("alice's output after node-b's tries: %v", err)
	}
	bobPod := podURL(layout.Pod{Namespace: "b", Name: "p", UID: "u2"})
	for _, r := range []struct{ method, path string }{
		{"PUT", bobPod + "?user=bob"},
		{"PUT", bobPod + "/files/x"},
		{"DELETE", bobPod},
	} {
		if code := asB(r.method, r.path); code != 204 {
			t.Errorf("node-b on its own user's pod: %s %s = %d, want 204", r.method, r.path, code)
		}
	}
	if code := asB("GET", "/v1/pods/b/p/u3/containers/main/info"); code != 404 {
		t.Errorf("node-b on a pod that does not exist: %d, want 404", code)
	}
}
