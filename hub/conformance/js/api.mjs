// Exercises the official client's smaller API calls and its error handling.
//
//   HUB_URL=... HF_TOKEN=hf_... REPO=ns/name PRIVATE_REPO=ns/secret \
//     RESULT=out.json node api.mjs
//
// REPO must exist, belong to the token's user and hold model.safetensors.
// RESULT receives one field per check (booleans, names, HTTP statuses).
import {
	createBranch,
	createRepo,
	deleteFile,
	fileExists,
	modelInfo,
	repoExists,
	uploadFile,
	whoAmI,
} from "@huggingface/hub";
import { env, run, settings, writeResult } from "./common.mjs";

// status runs fn and returns the HTTP status of the HubApiError it throws,
// or 0 when it does not throw.
async function status(fn) {
	try {
		await fn();
		return 0;
	} catch (err) {
		if (err?.statusCode === undefined) throw err;
		return err.statusCode;
	}
}

run(async () => {
	const base = settings();
	const { hubUrl, accessToken, repo } = base;
	const owner = repo.name.split("/")[0];
	const missing = { type: "model", name: `${owner}/does-not-exist` };
	const secret = { type: "model", name: env("PRIVATE_REPO") };
	const out = {};

	out.whoami = (await whoAmI({ hubUrl, accessToken })).name;
	out.whoamiBogus = await status(() => whoAmI({ hubUrl, accessToken: "hf_bogus_token" }));

	out.repoExists = await repoExists({ repo, hubUrl, accessToken });
	out.missingExists = await repoExists({ repo: missing, hubUrl, accessToken });
	out.privateExistsAnon = await repoExists({ repo: secret, hubUrl });
	out.privateExistsOwner = await repoExists({ repo: secret, hubUrl, accessToken });
	out.infoMissingAnon = await status(() => modelInfo({ name: missing.name, hubUrl }));
	out.infoMissingToken = await status(() => modelInfo({ name: missing.name, hubUrl, accessToken }));
	out.createAgain = await status(() => createRepo({ repo, hubUrl, accessToken }));

	await createBranch({ repo, hubUrl, accessToken, branch: "dev" });
	out.branchAgain = await status(() => createBranch({ repo, hubUrl, accessToken, branch: "dev" }));
	await uploadFile({ repo, hubUrl, accessToken, branch: "dev", file: { path: "dev.txt", content: new Blob(["on dev"]) } });
	out.devFileOnDev = await fileExists({ repo, hubUrl, accessToken, revision: "dev", path: "dev.txt" });
	out.devFileOnMain = await fileExists({ repo, hubUrl, accessToken, revision: "main", path: "dev.txt" });
	out.lfsFileExists = await fileExists({ repo, hubUrl, accessToken, path: "model.safetensors" });
	await deleteFile({ repo, hubUrl, accessToken, branch: "dev", path: "dev.txt" });
	out.devFileAfterDelete = await fileExists({ repo, hubUrl, accessToken, revision: "dev", path: "dev.txt" });

	await writeResult(out);
});
