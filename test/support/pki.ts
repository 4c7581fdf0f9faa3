// Test PKI made with the `openssl` CLI at run time, so no key is ever committed. One root CA signs
// an intermediate, which signs every good leaf: chains are two deep, as in real deployments, so a
// verifier that only trusts the root must be handed the intermediate. Each broken certificate is
// broken in exactly one way, so a test learns which check rejected it.
//
// Signing goes through `openssl ca` (not `openssl x509 -req`) because it alone keeps the issuing
// database that `-revoke`/`-gencrl` need, and because OpenSSL 3.0's x509 has no `-not_before`, so
// an expired certificate needs `ca -startdate/-enddate`.

import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { runCommand } from './run-cmd.js';

export type KeyType = 'ec' | 'rsa';

/** File paths of one certificate and its private key (mode 0600). */
export interface KeyPair {
  readonly cert: string;
  readonly key: string;
}

/** A leaf issued by the intermediate; `chain` is the leaf followed by the intermediate. */
export interface LeafCert extends KeyPair {
  readonly chain: string;
}

export interface Pki {
  readonly dir: string;
  readonly keyType: KeyType;
  /** CN of the broken certificates below, so they fail only for their one defect. */
  readonly clientCn: string;
  /** Self-signed root CA certificate. */
  readonly rootCa: string;
  /** Intermediate CA certificate, signed by the root; issues all good leaves. */
  readonly intermediateCa: string;
  /** Root + intermediate: the trust file for sslrootcert / ssl_ca_file / tls `ca`. */
  readonly caBundle: string;
  /** serverAuth, SANs DNS:localhost, IP:127.0.0.1, IP:::1. */
  readonly server: LeafCert;
  /** serverAuth, SAN DNS:wrong.example only: fails hostname checks against localhost. */
  readonly wrongHostServer: LeafCert;
  /** clientAuth, CN "wrong-cn": valid chain, names no test user. */
  readonly wrongCnClient: LeafCert;
  // The next four carry CN = clientCn, the localhost SANs and both serverAuth and clientAuth, so
  // each works in either role and is rejected only for the reason in its name.
  /** Issued by a separate CA (`untrustedCa`) that no trust file contains. */
  readonly untrusted: KeyPair;
  readonly untrustedCa: string;
  readonly selfSigned: KeyPair;
  /** Issued by the intermediate, valid only during January 2020. */
  readonly expired: LeafCert;
  /** Issued by the intermediate and listed in `crl`. */
  readonly revoked: LeafCert;
  /** PEM CRLs of the intermediate (revoking `revoked`) and of the root (empty). Both are needed
   * by verifiers that check the whole chain, as Node's tls does once given any CRL. */
  readonly crl: string;
  /** A client certificate (clientAuth, CN = cn) from the intermediate; generated once per cn. */
  clientCert(cn: string): Promise<LeafCert>;
}

export interface PkiOptions {
  /** EC P-256 by default (fast); 'rsa' gives RSA 2048. */
  keyType?: KeyType;
  /** CN of the untrusted/self-signed/expired/revoked certificates; default 'plainuser', the
   * password-less role pg-cluster creates, so cert-auth tests can use them as that user. */
  clientCn?: string;
}

const OPENSSL_TIMEOUT_MS = 30_000;
const VALID_DAYS = 30;
const CA_DAYS = 3650;
const LOCALHOST_SANS = 'DNS:localhost, IP:127.0.0.1, IP:::1';

/** Per directory, so two callers in one process share one generation instead of racing. */
const made = new Map<string, Promise<Pki>>();

/** Generate (or reuse, if `dir` already holds a complete set) a PKI under `dir`. */
export function makePki(dir: string, opts: PkiOptions = {}): Promise<Pki> {
  const abs = path.resolve(dir);
  let pki = made.get(abs);
  if (pki === undefined) {
    pki = generate(abs, opts.keyType ?? 'ec', opts.clientCn ?? 'plainuser');
    made.set(abs, pki);
    // A failed attempt must not poison later calls with the same dir.
    pki.catch(() => made.delete(abs));
  }
  return pki;
}

async function openssl(args: string[], cwd: string): Promise<string> {
  const r = await runCommand('openssl', args, { cwd, timeoutMs: OPENSSL_TIMEOUT_MS });
  if (r.code !== 0) {
    throw new Error(`openssl ${args.join(' ')} failed (${r.timedOut ? 'timeout' : `exit ${r.code}`}):\n${r.stderr}`);
  }
  return r.stdout;
}

/** `-subj` treats / + = \ as syntax; escape them so any CN round-trips. */
function subj(cn: string): string {
  return '/CN=' + cn.replace(/[/+=\\]/g, (c) => '\\' + c);
}

/** A file name for a CN: readable when the CN is tame, unique either way. */
function fileStem(cn: string): string {
  const tame = cn.replace(/[^A-Za-z0-9_.-]/g, '_');
  return tame === cn ? cn : `${tame}-${createHash('sha256').update(cn).digest('hex').slice(0, 8)}`;
}

function configText(dir: string): string {
  const caSection = (name: string) => `
[ ${name} ]
dir              = ${path.join(dir, name)}
database         = $dir/index.txt
serial           = $dir/serial
crlnumber        = $dir/crlnumber
new_certs_dir    = $dir/issued
certificate      = ${path.join(dir, `${name}.crt`)}
private_key      = ${path.join(dir, `${name}.key`)}
default_md       = sha256
default_days     = ${VALID_DAYS}
default_crl_days = ${VALID_DAYS}
policy           = policy_cn
# Tests issue several certificates for one CN (e.g. the good and the revoked one).
unique_subject   = no
`;
  const leaf = (eku: string, sans: string | null) =>
    `basicConstraints = critical, CA:false
extendedKeyUsage = ${eku}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
${sans === null ? '' : `subjectAltName = ${sans}\n`}`;
  return `# Generated by test/support/pki.ts
[ req ]
distinguished_name = req_dn
prompt = no
[ req_dn ]
CN = unused
${caSection('root_ca')}${caSection('intermediate_ca')}${caSection('untrusted_ca')}
[ policy_cn ]
commonName = supplied

[ ext_ca ]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[ ext_intermediate ]
basicConstraints = critical, CA:true, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[ ext_server ]
${leaf('serverAuth', LOCALHOST_SANS)}
[ ext_wrong_host ]
${leaf('serverAuth', 'DNS:wrong.example')}
[ ext_client ]
${leaf('clientAuth', null)}
[ ext_any_role ]
${leaf('serverAuth, clientAuth', LOCALHOST_SANS)}
[ ext_crl ]
authorityKeyIdentifier = keyid:always
`;
}

type CaName = 'root_ca' | 'intermediate_ca' | 'untrusted_ca';

async function generate(dir: string, keyType: KeyType, clientCn: string): Promise<Pki> {
  const manifestPath = path.join(dir, 'pki.json');
  const cnf = path.join(dir, 'openssl.cnf');
  const p = (name: string) => path.join(dir, name);

  // `openssl ca` rewrites its index and serial files on every call: one call per CA at a time.
  const caQueue = new Map<CaName, Promise<unknown>>();
  function withCa<T>(ca: CaName, job: () => Promise<T>): Promise<T> {
    const next = (caQueue.get(ca) ?? Promise.resolve()).then(job, job);
    caQueue.set(ca, next.catch(() => undefined));
    return next;
  }

  async function newKey(file: string): Promise<string> {
    const algo = keyType === 'ec'
      ? ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256']
      : ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048'];
    await openssl(['genpkey', ...algo, '-out', file], dir);
    await fs.chmod(file, 0o600);
    return file;
  }

  async function selfSign(stem: string, cn: string, ext: string, days: number): Promise<KeyPair> {
    const key = await newKey(p(`${stem}.key`));
    const cert = p(`${stem}.crt`);
    await openssl(['req', '-x509', '-new', '-config', cnf, '-extensions', ext, '-key', key,
      '-subj', subj(cn), '-days', String(days), '-sha256', '-out', cert], dir);
    return { cert, key };
  }

  /** Key + CSR in parallel with other work, then the signature under the CA's lock. */
  async function issue(ca: CaName, stem: string, cn: string, ext: string,
    validity: string[] = ['-days', String(VALID_DAYS)]): Promise<KeyPair> {
    const key = await newKey(p(`${stem}.key`));
    const csr = p(`${stem}.csr`);
    const cert = p(`${stem}.crt`);
    await openssl(['req', '-new', '-config', cnf, '-key', key, '-subj', subj(cn), '-out', csr], dir);
    await withCa(ca, () => openssl(['ca', '-batch', '-notext', '-config', cnf, '-name', ca,
      '-extensions', ext, ...validity, '-in', csr, '-out', cert], dir));
    await fs.rm(csr);
    return { cert, key };
  }

  const intermediatePem = () => fs.readFile(p('intermediate_ca.crt'), 'utf8');

  async function withChain(pair: KeyPair): Promise<LeafCert> {
    const chain = pair.cert.replace(/\.crt$/, '.chain.crt');
    await fs.writeFile(chain, (await fs.readFile(pair.cert, 'utf8')) + (await intermediatePem()));
    return { ...pair, chain };
  }

  const clientCerts = new Map<string, Promise<LeafCert>>();
  function clientCert(cn: string): Promise<LeafCert> {
    let c = clientCerts.get(cn);
    if (c === undefined) {
      const stem = `client-${fileStem(cn)}`;
      c = fs.access(p(`${stem}.chain.crt`)).then(
        () => ({ cert: p(`${stem}.crt`), key: p(`${stem}.key`), chain: p(`${stem}.chain.crt`) }),
        () => issue('intermediate_ca', stem, cn, 'ext_client').then(withChain));
      clientCerts.set(cn, c);
      c.catch(() => clientCerts.delete(cn));
    }
    return c;
  }

  // A complete earlier generation in this dir (the manifest is written last) is reused as is.
  const cached = await fs.readFile(manifestPath, 'utf8').catch(() => null);
  if (cached !== null) {
    const files = JSON.parse(cached) as Omit<Pki, 'clientCert'>;
    if (files.keyType === keyType && files.clientCn === clientCn) return { ...files, clientCert };
  }

  await fs.mkdir(dir, { recursive: true });
  await fs.writeFile(cnf, configText(dir));
  await Promise.all((['root_ca', 'intermediate_ca', 'untrusted_ca'] as const).map(async (ca) => {
    await fs.mkdir(p(`${ca}/issued`), { recursive: true });
    await fs.writeFile(p(`${ca}/index.txt`), '');
    // Random first serials: certificates from different runs never share issuer + serial.
    await fs.writeFile(p(`${ca}/serial`), randomBytes(8).toString('hex').replace(/^./, '1') + '\n');
    await fs.writeFile(p(`${ca}/crlnumber`), '01\n');
  }));

  // Stage 1: the CAs. `openssl ca` reads the CA cert/key from the names in the config.
  const rootReady = selfSign('root_ca', 'pgpool-ts test root CA', 'ext_ca', CA_DAYS);
  const untrustedReady = selfSign('untrusted_ca', 'pgpool-ts untrusted CA', 'ext_ca', CA_DAYS);
  const intermediateReady = rootReady.then(() => issue('root_ca', 'intermediate_ca',
    'pgpool-ts test intermediate CA', 'ext_intermediate', ['-days', String(CA_DAYS)]));

  // Stage 2: leaves; each waits only for its issuer.
  const fromIntermediate = (stem: string, cn: string, ext: string, validity?: string[]) =>
    intermediateReady.then(() => issue('intermediate_ca', stem, cn, ext, validity)).then(withChain);
  const [server, wrongHostServer, wrongCnClient, expired, revoked, untrusted, selfSigned] = await Promise.all([
    fromIntermediate('server', 'localhost', 'ext_server'),
    fromIntermediate('wrong-host', 'wrong.example', 'ext_wrong_host'),
    fromIntermediate('wrong-cn', 'wrong-cn', 'ext_client'),
    fromIntermediate('expired', clientCn, 'ext_any_role', ['-startdate', '20200101000000Z', '-enddate', '20200201000000Z']),
    fromIntermediate('revoked', clientCn, 'ext_any_role'),
    untrustedReady.then(() => issue('untrusted_ca', 'untrusted', clientCn, 'ext_any_role')),
    selfSign('self-signed', clientCn, 'ext_any_role', VALID_DAYS),
  ]);

  // Stage 3: revocation. Each CA signs its own CRL; the file holds both.
  await withCa('intermediate_ca', () => openssl(['ca', '-batch', '-config', cnf, '-name', 'intermediate_ca',
    '-revoke', revoked.cert, '-crl_reason', 'keyCompromise'], dir));
  const [intermediateCrl, rootCrl] = await Promise.all((['intermediate_ca', 'root_ca'] as const).map((ca) =>
    withCa(ca, () => openssl(['ca', '-batch', '-config', cnf, '-name', ca, '-gencrl', '-crlexts', 'ext_crl'], dir))));
  const crl = p('crl.pem');
  await fs.writeFile(crl, `${intermediateCrl}${rootCrl}`);

  const caBundle = p('ca-bundle.crt');
  await fs.writeFile(caBundle, (await fs.readFile(p('root_ca.crt'), 'utf8')) + (await intermediatePem()));

  const files: Omit<Pki, 'clientCert'> = {
    dir, keyType, clientCn,
    rootCa: p('root_ca.crt'), intermediateCa: p('intermediate_ca.crt'), caBundle,
    server, wrongHostServer, wrongCnClient,
    untrusted, untrustedCa: p('untrusted_ca.crt'), selfSigned, expired, revoked, crl,
  };
  await fs.writeFile(manifestPath, JSON.stringify(files, null, 2));
  return { ...files, clientCert };
}
