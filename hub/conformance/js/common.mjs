// Shared helpers for the conformance scripts: they read their settings from
// the environment (never printing the token) and write one JSON result file.
import { writeFile } from "node:fs/promises";

export function env(name, fallback) {
	const v = process.env[name];
	if (v === undefined || v === "") {
		if (fallback !== undefined) return fallback;
		throw new Error(`environment variable ${name} is required`);
	}
	return v;
}

export function settings() {
	return {
		hubUrl: env("HUB_URL"),
		accessToken: env("HF_TOKEN"),
		repo: { type: "model", name: env("REPO") },
	};
}

export async function writeResult(result) {
	await writeFile(env("RESULT"), JSON.stringify(result, null, 2));
}

// run reports failures on stderr with the Hub's message and exits non-zero.
export function run(main) {
	main().catch((err) => {
		console.error(`${err?.name ?? "Error"}: ${err?.message ?? err}`);
		if (err?.statusCode) console.error(`status ${err.statusCode}`);
		process.exit(1);
	});
}
