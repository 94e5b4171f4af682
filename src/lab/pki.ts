/**
 * The lab's certificate authority: a CA made once per lab data directory, and leaf
 * certificates signed by it for the lab's HTTPS servers (the world hosts). Pods trust
 * the CA through SSL_CERT_FILE / CURL_CA_BUNDLE; the machine's trust store is never
 * touched. Keys and certificates are made with the openssl command (Debian's openssl).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';

export interface KeyPair {
  cert: string;
  key: string;
  certPath: string;
  keyPath: string;
}

function openssl(args: string[], input?: string): string {
  try {
    return execFileSync('openssl', args, { input, stdio: ['pipe', 'pipe', 'pipe'] }).toString();
  } catch (err) {
    const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim();
    throw new Error(`openssl ${args[0]}: ${stderr || (err as Error).message}`, { cause: err });
  }
}

function read(certPath: string, keyPath: string): KeyPair {
  return { cert: readFileSync(certPath, 'utf8'), key: readFileSync(keyPath, 'utf8'), certPath, keyPath };
}

/** The lab CA under dir, made on first use and reused after. */
export function ensureCa(dir: string, commonName = 'Hypha lab CA'): KeyPair {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const certPath = join(dir, 'ca.crt');
  const keyPath = join(dir, 'ca.key');
  if (!existsSync(certPath) || !existsSync(keyPath)) {
    openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', keyPath]);
    openssl([
      'req',
      '-x509',
      '-new',
      '-key',
      keyPath,
      '-sha256',
      '-days',
      '3650',
      '-subj',
      `/CN=${commonName}`,
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
      '-out',
      certPath,
    ]);
  }
  return read(certPath, keyPath);
}

/**
 * A server certificate for the given DNS names and IP addresses, signed by the CA; made
 * once per name under dir and reused.
 */
export function ensureServerCert(dir: string, ca: KeyPair, name: string, sans: string[]): KeyPair {
  const safe = name.replace(/[^A-Za-z0-9.-]/g, '_');
  const certPath = join(dir, `${safe}.crt`);
  const keyPath = join(dir, `${safe}.key`);
  if (!existsSync(certPath) || !existsSync(keyPath)) {
    const san = sans.map((s) => (isIP(s) ? `IP:${s}` : `DNS:${s}`)).join(',');
    const csrPath = join(dir, `${safe}.csr`);
    const extPath = join(dir, `${safe}.ext`);
    openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', keyPath]);
    openssl(['req', '-new', '-key', keyPath, '-subj', `/CN=${name}`, '-out', csrPath]);
    writeFileSync(extPath, `subjectAltName=${san}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n`);
    openssl([
      'x509',
      '-req',
      '-in',
      csrPath,
      '-CA',
      ca.certPath,
      '-CAkey',
      ca.keyPath,
      '-CAcreateserial',
      '-days',
      '825',
      '-sha256',
      '-extfile',
      extPath,
      '-out',
      certPath,
    ]);
  }
  return read(certPath, keyPath);
}
