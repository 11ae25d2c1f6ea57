package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"github.com/lorasync/lorasync/daemon/config"
	"github.com/lorasync/lorasync/daemon/state"
	"github.com/lorasync/lorasync/internal/atomicfile"
)

// ProvenanceFile is pushed next to every migrated adapter. Finding it on
// the target, naming the same migration, is how a restarted daemon knows a
// push already happened.
const ProvenanceFile = "lorasync.json"

// provenanceFormat versions the file's schema. 2: a local adapter is
// named by Adapter.PublicID, not its path, and adapter.path is gone.
const provenanceFormat = 2

// RepoCommit names a repo at a commit.
type RepoCommit struct {
	Repo   string `json:"repo"`
	Commit string `json:"commit"`
}

// ProvenanceAdapter names the source adapter.
type ProvenanceAdapter struct {
	// ID is Adapter.PublicID: "hub:owner/name@revision", or
	// "local:<directory name>" for a local adapter (never its path).
	ID       string `json:"id"`
	Repo     string `json:"repo,omitempty"`
	Revision string `json:"revision,omitempty"`
	// Commit is the Hub commit, or "sha256:..." of a local adapter's files.
	Commit string `json:"commit"`
}

// Provenance is the content of lorasync.json.
type Provenance struct {
	Tool    string               `json:"tool"`
	Format  int                  `json:"format"`
	Track   string               `json:"track"`
	Adapter ProvenanceAdapter    `json:"adapter"`
	OldBase RepoCommit           `json:"old_base"`
	NewBase RepoCommit           `json:"new_base"`
	Method  string               `json:"method"`
	Options config.ConvertConfig `json:"options"`
	Summary string               `json:"summary,omitempty"`
	Metrics map[string]float64   `json:"metrics,omitempty"`
	Created time.Time            `json:"created"`
	// Convert is the converter's own record (its lorasync.json), verbatim.
	Convert json.RawMessage `json:"convert,omitempty"`
}

func newProvenance(job state.Job, ad Adapter, opts config.ConvertConfig, res ConvertResult, now time.Time) Provenance {
	return Provenance{
		Tool:    "lorasync",
		Format:  provenanceFormat,
		Track:   job.Key.Track,
		Adapter: ProvenanceAdapter{ID: ad.PublicID(), Repo: ad.Repo, Revision: ad.Revision, Commit: job.AdapterCommit},
		OldBase: RepoCommit{Repo: job.OldBaseRepo, Commit: job.OldBaseCommit},
		NewBase: RepoCommit{Repo: job.Key.BaseRepo, Commit: job.Key.BaseCommit},
		Method:  "LoRASuite",
		Options: publicOptions(opts),
		Summary: res.Summary,
		Metrics: res.Metrics,
		Created: now.UTC(),
	}
}

// sameMigration reports whether p records the migration of the same source
// adapter revision to the same new base commit as job. Records pushed before
// local adapters were published by PublicID name them by job.Key.Adapter.
func sameMigration(p Provenance, ad Adapter, job state.Job) bool {
	return p.Tool == "lorasync" &&
		(p.Adapter.ID == ad.PublicID() || p.Adapter.ID == job.Key.Adapter) && p.Adapter.Commit == job.AdapterCommit &&
		p.NewBase.Repo == job.Key.BaseRepo && p.NewBase.Commit == job.Key.BaseCommit
}

// target is where one job's output goes.
type target struct {
	Repo     string
	Revision string
	CreatePR bool
	Private  bool
}

func (t target) String() string {
	if t.CreatePR {
		return t.Repo + " (pull request on " + t.Revision + ")"
	}
	return t.Repo + "@" + t.Revision
}

// targetFor expands the track's target for one adapter and new base repo.
func targetFor(tr config.Track, ad Adapter, newBaseRepo string) (target, error) {
	baseOwner, baseName, _ := strings.Cut(newBaseRepo, "/")
	vars := map[string]string{
		"adapter": ad.Name(), "adapter_owner": ad.Owner(),
		"base_name": baseName, "base_owner": baseOwner, "track": tr.Name,
	}
	tg := tr.Target
	switch {
	case tg.RepoTemplate != "":
		name, err := config.Expand(tg.RepoTemplate, vars)
		if err != nil {
			return target{}, permanentf("target for %s: %w", ad.ID, err)
		}
		if !strings.Contains(name, "/") {
			owner := tg.Owner
			if owner == "" {
				owner = ad.Owner()
			}
			if owner == "" {
				return target{}, permanentf("target for %s: %q has no owner (set target.owner)", ad.ID, name)
			}
			name = owner + "/" + name
		}
		return target{Repo: name, Revision: defaultRevision, Private: tg.Private}, nil
	case tg.Branch != "":
		if ad.Local() {
			return target{}, permanentf("target for %s: a local adapter has no repo to branch", ad.ID)
		}
		br, err := config.Expand(tg.Branch, vars)
		if err != nil {
			return target{}, permanentf("target for %s: %w", ad.ID, err)
		}
		return target{Repo: ad.Repo, Revision: br}, nil
	default:
		if ad.Local() {
			return target{}, permanentf("target for %s: a local adapter has no repo to open a pull request on", ad.ID)
		}
		return target{Repo: ad.Repo, Revision: defaultRevision, CreatePR: true}, nil
	}
}

// existing is an earlier push of the same migration found on the Hub.
type existing struct {
	Commit      string
	PullRequest string
}

// reconcile looks on the target for a provenance file naming job's
// migration. It returns the earlier push if there is one; otherwise the
// head the push must build on ("" when the branch does not exist yet).
func reconcile(ctx context.Context, hub Hub, tg target, ad Adapter, job state.Job) (found *existing, parent string, err error) {
	if tg.CreatePR {
		refs, err := hub.PullRequests(ctx, tg.Repo)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return nil, "", fmt.Errorf("list pull requests of %s: %w", tg.Repo, err)
		}
		for _, ref := range refs {
			ok, commit, err := provenanceAt(ctx, hub, tg.Repo, ref, ad, job)
			if err != nil {
				return nil, "", err
			}
			if ok {
				return &existing{Commit: commit, PullRequest: ref}, "", nil
			}
		}
		return nil, "", nil
	}
	ok, head, err := provenanceAt(ctx, hub, tg.Repo, tg.Revision, ad, job)
	switch {
	case err != nil:
		return nil, "", err
	case ok:
		return &existing{Commit: head}, head, nil
	default:
		return nil, head, nil
	}
}

// provenanceAt reads lorasync.json at repo@rev. It returns whether it
// names job's migration and the commit rev resolved to ("" when repo or
// rev does not exist).
func provenanceAt(ctx context.Context, hub Hub, repo, rev string, ad Adapter, job state.Job) (bool, string, error) {
	head, err := hub.Head(ctx, repo, rev)
	if errors.Is(err, ErrNotFound) {
		return false, "", nil
	}
	if err != nil {
		return false, "", fmt.Errorf("reconcile %s@%s: %w", repo, rev, err)
	}
	data, err := hub.ReadFile(ctx, repo, head, ProvenanceFile)
	if errors.Is(err, ErrNotFound) {
		return false, head, nil
	}
	if err != nil {
		return false, head, fmt.Errorf("reconcile %s@%s %s: %w", repo, head, ProvenanceFile, err)
	}
	var p Provenance
	if err := json.Unmarshal(data, &p); err != nil {
		// Someone else's file of that name: not ours, so not a match.
		return false, head, nil
	}
	return sameMigration(p, ad, job), head, nil
}

// writeProvenance writes lorasync.json into dir, and a model card
// (README.md) unless the converter already wrote one. A lorasync.json the
// converter wrote is kept inside the daemon's, under "convert", without its
// local directories (publicConvertRecord).
func writeProvenance(dir string, p Provenance) error {
	pf := filepath.Join(dir, ProvenanceFile)
	if prev, err := os.ReadFile(pf); err == nil {
		rec, err := publicConvertRecord(prev)
		if err != nil {
			return fmt.Errorf("provenance: the converter's %s: %w", pf, err)
		}
		p.Convert = json.RawMessage(rec)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("provenance: %w", err)
	}
	data, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return fmt.Errorf("provenance: %w", err)
	}
	if err := atomicfile.WriteFile(pf, append(data, '\n'), 0o644); err != nil {
		return err
	}
	card := filepath.Join(dir, "README.md")
	if _, err := os.Stat(card); err == nil {
		return nil
	}
	var b bytes.Buffer
	if err := cardTemplate.Execute(&b, p); err != nil {
		return fmt.Errorf("model card: %w", err)
	}
	return atomicfile.WriteFile(card, b.Bytes(), 0o644)
}

var cardTemplate = template.Must(template.New("card").Parse(`---
base_model: {{.NewBase.Repo}}
library_name: peft
tags:
- lora
- peft
- lorasync
---

# {{if .Adapter.Repo}}{{.Adapter.Repo}}{{else}}{{.Adapter.ID}}{{end}}, migrated to {{.NewBase.Repo}}

This LoRA adapter was migrated automatically by lorasync with the LoRASuite
method (arXiv 2505.13515), without retraining.

| | repo | commit |
|---|---|---|
| source adapter | {{if .Adapter.Repo}}{{.Adapter.Repo}}{{else}}{{.Adapter.ID}}{{end}} | {{.Adapter.Commit}} |
| trained on | {{.OldBase.Repo}} | {{.OldBase.Commit}} |
| migrated to | {{.NewBase.Repo}} | {{.NewBase.Commit}} |

Options: layer map {{.Options.LayerMap}}, transfer {{.Options.Transfer}}, head transfer {{.Options.HeadTransfer}}, input map {{.Options.InputMap}}.
{{if .Summary}}
Result: {{.Summary}}
{{end}}
A migrated adapter is a starting point: the LoRASuite paper follows the
projection with a short fine-tuning on task data. The full record is in
` + "`lorasync.json`" + `.
`))
