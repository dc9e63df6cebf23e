// Lint config: typescript-eslint's type-aware recommended rules, so that
// floating promises and unsafe `any` flows are caught, not just syntax.
import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["node_modules/", "data/", "coverage/", "test-results/", "public/vendor/"] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: {
        // The preloads a test gives a server process (node --import) are plain JavaScript,
        // outside the TypeScript project.
        projectService: { allowDefaultProject: ["test/fixtures/*.mjs"] },
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "@typescript-eslint/consistent-type-imports": "error",
      "@typescript-eslint/switch-exhaustiveness-check": "error",
      eqeqeq: ["error", "always"],
      // Fastify handlers, hooks and plugins are async by contract (a returned value is the
      // reply) whether or not their body awaits anything.
      "@typescript-eslint/require-await": "off",
    },
  },
  {
    // The web layer talks to storage through the ports (src/storage/port.ts,
    // src/coordinator/port.ts) and the engine-neutral records, never to one engine's adapter.
    files: ["src/web/**/*.ts"],
    rules: {
      "no-restricted-imports": [
        "error",
        {
          patterns: [
            {
              group: ["**/storage/sqlite/*", "**/storage/postgres/*"],
              message: "the web layer reaches storage through the ports, not an engine's adapter",
            },
          ],
        },
      ],
    },
  },
  {
    // Tests read JSON response bodies and assert on them field by field; typing every body
    // would only restate the schemas the assertions already check.
    files: ["test/**/*.ts"],
    rules: {
      "@typescript-eslint/no-unsafe-member-access": "off",
      "@typescript-eslint/no-unsafe-call": "off",
      "@typescript-eslint/no-unsafe-return": "off",
      "@typescript-eslint/no-unsafe-assignment": "off",
      "@typescript-eslint/no-unsafe-argument": "off",
    },
  },
  {
    files: ["**/*.js"],
    ...tseslint.configs.disableTypeChecked,
  },
  {
    // The command's launcher runs in Node as an ES module.
    files: ["bin/**/*.js"],
    languageOptions: { globals: { process: "readonly" } },
  },
  {
    // The dashboard's own script runs in the browser, as a classic script.
    files: ["public/**/*.js"],
    languageOptions: {
      sourceType: "script",
      globals: {
        window: "readonly",
        document: "readonly",
        setInterval: "readonly",
        URL: "readonly",
        WebSocket: "readonly",
      },
    },
  },
);
