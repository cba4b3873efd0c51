// dist/cjs holds CommonJS files under a package of "type": "module": mark the folder.
import { writeFileSync } from "node:fs";

writeFileSync(new URL("../dist/cjs/package.json", import.meta.url), '{"type":"commonjs"}\n');
