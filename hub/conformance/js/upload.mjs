// Uploads files with the official @huggingface/hub client.
//
//   HUB_URL=... HF_TOKEN=hf_... REPO=ns/name RESULT=out.json \
//     node upload.mjs <uploadFiles|commit> repoPath=localPath...
//
// Optional: CREATE_REPO=1 (create REPO first, public), TITLE, PARENT_COMMIT,
// BRANCH, DELETE (comma-separated repo paths to delete, commit mode only).
// RESULT receives {"commit": "<oid>", "repoUrl": "..."}.
import { readFile } from "node:fs/promises";
import { commit, createRepo, uploadFiles } from "@huggingface/hub";
import { env, run, settings, writeResult } from "./common.mjs";

run(async () => {
	const [mode, ...pairs] = process.argv.slice(2);
	const base = settings();
	const files = await Promise.all(
		pairs.map(async (pair) => {
			const eq = pair.indexOf("=");
			if (eq <= 0) throw new Error(`argument ${pair} is not repoPath=localPath`);
			const data = await readFile(pair.slice(eq + 1));
			return { path: pair.slice(0, eq), content: new Blob([data]) };
		}),
	);
	let repoUrl;
	if (env("CREATE_REPO", "") === "1") {
		repoUrl = (await createRepo({ ...base, private: false })).repoUrl;
	}
	const title = env("TITLE", "upload from @huggingface/hub");
	const branch = env("BRANCH", "main");
	let out;
	if (mode === "uploadFiles") {
		out = await uploadFiles({ ...base, files, commitTitle: title, branch });
	} else if (mode === "commit") {
		const deletes = env("DELETE", "")
			.split(",")
			.filter((p) => p !== "")
			.map((path) => ({ operation: "delete", path }));
		out = await commit({
			...base,
			title,
			branch,
			parentCommit: env("PARENT_COMMIT", "") || undefined,
			operations: [...files.map((f) => ({ operation: "addOrUpdate", ...f })), ...deletes],
		});
	} else {
		throw new Error(`unknown mode ${mode}: want uploadFiles or commit`);
	}
	await writeResult({ commit: out.commit.oid, commitUrl: out.commit.url, repoUrl });
});
