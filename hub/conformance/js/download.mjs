// Downloads files and lists commits with the official @huggingface/hub client.
//
//   HUB_URL=... HF_TOKEN=hf_... REPO=ns/name REVISION=main OUT_DIR=... \
//     CACHE_DIR=... RESULT=out.json node download.mjs path...
//
// Each path is fetched twice: downloadFile (bytes written under OUT_DIR) and
// downloadFileToCacheDir (the HF cache layout under CACHE_DIR). RESULT
// receives {info, files: {path: {size, etag, cachePath}}, commits, tree,
// models (listModels of the repo's owner), missingIsNull}.
import { mkdir, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import {
	downloadFile,
	downloadFileToCacheDir,
	fileDownloadInfo,
	listCommits,
	listFiles,
	listModels,
	modelInfo,
} from "@huggingface/hub";
import { env, run, settings, writeResult } from "./common.mjs";

run(async () => {
	const base = settings();
	const revision = env("REVISION", "main");
	const outDir = env("OUT_DIR");
	const cacheDir = env("CACHE_DIR");
	const info = await modelInfo({
		name: base.repo.name,
		hubUrl: base.hubUrl,
		accessToken: base.accessToken,
		revision,
		additionalFields: ["sha", "cardData", "tags"],
	});
	const files = {};
	for (const path of process.argv.slice(2)) {
		const meta = await fileDownloadInfo({ ...base, path, revision });
		if (!meta) throw new Error(`${path}: fileDownloadInfo says it does not exist`);
		const blob = await downloadFile({ ...base, path, revision });
		if (!blob) throw new Error(`${path}: downloadFile says it does not exist`);
		const target = join(outDir, path);
		await mkdir(dirname(target), { recursive: true });
		await writeFile(target, new Uint8Array(await blob.arrayBuffer()));
		const cachePath = await downloadFileToCacheDir({ ...base, path, revision, cacheDir });
		files[path] = { size: meta.size, etag: meta.etag, cachePath };
	}
	const commits = [];
	// batchSize 2 makes the client follow the Link rel="next" pages.
	for await (const c of listCommits({ ...base, revision, batchSize: 2 })) {
		commits.push({ oid: c.oid, title: c.title, authors: c.authors.map((a) => a.username) });
	}
	const tree = [];
	for await (const f of listFiles({ ...base, revision, recursive: true })) {
		tree.push({ path: f.path, type: f.type, oid: f.oid, size: f.size, lfsOid: f.lfs?.oid });
	}
	const models = [];
	const owner = base.repo.name.split("/")[0];
	for await (const m of listModels({ hubUrl: base.hubUrl, accessToken: base.accessToken, search: { owner }, additionalFields: ["sha"] })) {
		models.push({ name: m.name, sha: m.sha, private: m.private, updatedAt: m.updatedAt });
	}
	// A missing file is null (EntryNotFound), not an error.
	const missing = await fileDownloadInfo({ ...base, path: "does/not/exist.json", revision });
	await writeResult({
		models,
		missingIsNull: missing === null,
		info: { id: info.id, name: info.name, sha: info.sha, cardData: info.cardData, tags: info.tags, updatedAt: info.updatedAt },
		files,
		commits,
		tree,
	});
});
