#!/usr/bin/env node
// Installed entry point: the compiled CLI lives in dist/ (built by `npm run build` / prepare).
import '../dist/src/main.js';
