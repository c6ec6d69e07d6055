// `npm test`: build (tsc), start the Python side once (a database, `pageq serve`: test/harness.js) while
// building, then run every test file with node's test runner against it, one file at a time.
import { spawn } from "node:child_process";
import { readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { startHarness } from "./harness.js";

const folder = fileURLToPath(new URL(".", import.meta.url));
const tsc = fileURLToPath(new URL("../node_modules/typescript/bin/tsc", import.meta.url));

/** @param {string[]} args @param {NodeJS.ProcessEnv} [env] @returns {Promise<number>} */
function node(args, env = process.env) {
  const child = spawn(process.execPath, args, { stdio: "inherit", env });
  return new Promise((resolve) => child.once("exit", (code) => resolve(code ?? 1)));
}

const build = (async () => {
  for (const project of ["tsconfig.json", "test/tsconfig.json"]) {
    if ((await node([tsc, "-p", `${folder}../${project}`])) !== 0) return false;
  }
  return true;
})();
const server = startHarness();
try {
  const [built, { hello }] = await Promise.all([build, server]);
  if (built) {
    const files = readdirSync(folder)
      .filter((name) => name.endsWith(".test.js"))
      .map((name) => folder + name);
    const env = { ...process.env, PAGEQ_TEST_SERVER: JSON.stringify(hello) };
    process.exitCode = await node(["--test", "--test-concurrency=1", ...process.argv.slice(2), ...files], env);
  } else {
    process.exitCode = 1;
  }
} finally {
  await (await server.catch(() => undefined))?.stop();
}
