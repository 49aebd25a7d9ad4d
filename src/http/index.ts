// The HTTP server of /metrics, /healthz and /readyz, and the exporter web config that secures it.
export { createApp, listen } from './server.js';
export { loadWebConfig, type WebConfig } from './web-config.js';
