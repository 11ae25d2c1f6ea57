package conformance_test

import (
	"testing"

	"github.com/lorasync/lorasync/hub/hubtest"
)

// TestJSSmallCallsAndErrors runs api.mjs: whoAmI, repoExists, modelInfo and
// createRepo/createBranch conflicts, fileExists (HEAD on /raw/), uploadFile
// to a branch and deleteFile, and checks what the official client concluded
// from the fake's answers.
func TestJSSmallCallsAndErrors(t *testing.T) {
	node := requireNode(t)
	s := hubtest.NewTB(t)
	const owner, token = "carol", "hf_conformance_carol_000000000000"
	s.AddToken(token, owner)
	repo, secret := owner+"/model", owner+"/secret"
	for _, r := range []struct {
		id      string
		private bool
	}{{repo, false}, {secret, true}} {
		if err := s.CreateRepo(r.id, r.private); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Commit(repo, "main", map[string][]byte{"model.safetensors": randomBytes(5, 100)}, "weights"); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Whoami             string `json:"whoami"`
		WhoamiBogus        int    `json:"whoamiBogus"`
		RepoExists         bool   `json:"repoExists"`
		MissingExists      bool   `json:"missingExists"`
		PrivateExistsAnon  bool   `json:"privateExistsAnon"`
		PrivateExistsOwner bool   `json:"privateExistsOwner"`
		InfoMissingAnon    int    `json:"infoMissingAnon"`
		InfoMissingToken   int    `json:"infoMissingToken"`
		CreateAgain        int    `json:"createAgain"`
		BranchAgain        int    `json:"branchAgain"`
		DevFileOnDev       bool   `json:"devFileOnDev"`
		DevFileOnMain      bool   `json:"devFileOnMain"`
		LFSFileExists      bool   `json:"lfsFileExists"`
		DevFileAfterDelete bool   `json:"devFileAfterDelete"`
	}
	env := map[string]string{"HUB_URL": s.URL, "HF_TOKEN": token, "REPO": repo, "PRIVATE_REPO": secret}
	if out, err := runNode(t, node, "api.mjs", env, &got); err != nil {
		t.Fatalf("api.mjs: %v\n%s", err, out)
	}
	checks := []struct {
		name string
		ok   bool
	}{
		{"whoAmI names the token's user", got.Whoami == owner},
		{"an unknown token is a 401", got.WhoamiBogus == 401},
		{"repoExists on an existing repo", got.RepoExists},
		{"repoExists on a missing repo", !got.MissingExists},
		{"a private repo is invisible anonymously", !got.PrivateExistsAnon},
		{"a private repo is visible to its owner", got.PrivateExistsOwner},
		{"missing repo, anonymous: 401", got.InfoMissingAnon == 401},
		{"missing repo, with a token: 404", got.InfoMissingToken == 404},
		{"createRepo on an existing repo: 409", got.CreateAgain == 409},
		{"createBranch on an existing branch: 409", got.BranchAgain == 409},
		{"a file uploaded to dev exists on dev", got.DevFileOnDev},
		{"and not on main", !got.DevFileOnMain},
		{"fileExists sees an LFS file", got.LFSFileExists},
		{"deleteFile removed it from dev", !got.DevFileAfterDelete},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("%s: failed (client saw %+v)", c.name, got)
		}
	}
	// The fake agrees: dev has two commits over main (upload, delete).
	dev, _ := s.Commits(repo, "dev")
	main, _ := s.Commits(repo, "main")
	if len(dev) != len(main)+2 || dev[2].ID != main[0].ID {
		t.Errorf("dev history %d commits over main's %d", len(dev), len(main))
	}
}
