/**
 * The emulator's TLS identity, made fresh at every start as kubeadm makes a cluster's:
 * a CA certificate (what a kubeconfig's `certificate-authority` names) and a serving
 * certificate it signed, for the loopback names. node:crypto cannot sign X.509, so the
 * certificates are built with node-forge (pure JavaScript, no globals touched); the
 * RSA keys come from node:crypto, which makes them natively and off the main thread.
 */
import { generateKeyPair, randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import { promisify } from 'node:util';
import forge from 'node-forge';

export interface ServingCertificates {
  /** The CA certificate (PEM) that clients trust. */
  readonly ca: string;
  /** The server's certificate (PEM), signed by the CA. */
  readonly cert: string;
  /** The server's private key (PEM, PKCS#8). */
  readonly key: string;
}

const generateRsa = promisify(generateKeyPair);
const DAY_MS = 24 * 60 * 60 * 1000;

async function rsaKeys(): Promise<{ privateKey: forge.pki.rsa.PrivateKey; publicKey: forge.pki.rsa.PublicKey; pem: string }> {
  const { privateKey } = await generateRsa('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  const key = forge.pki.privateKeyFromPem(privateKey);
  return { privateKey: key, publicKey: forge.pki.setRsaPublicKey(key.n, key.e), pem: privateKey };
}

/** A positive random serial: two emulators' certificates never share issuer and serial. */
function serial(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0] ?? 0) & 0x7f;
  return bytes.toString('hex');
}

function validity(cert: forge.pki.Certificate, days: number): void {
  // Backdated an hour: a client whose clock runs a little behind still accepts it.
  const now = Date.now();
  cert.validity.notBefore = new Date(now - 60 * 60 * 1000);
  cert.validity.notAfter = new Date(now + days * DAY_MS);
}

/**
 * A new CA and a serving certificate for `hosts` (DNS names and IP addresses, each a
 * subjectAltName; `localhost`, 127.0.0.1 and ::1 are always included).
 */
export async function makeServingCertificates(hosts: readonly string[] = []): Promise<ServingCertificates> {
  const [caKeys, serverKeys] = await Promise.all([rsaKeys(), rsaKeys()]);

  const ca = forge.pki.createCertificate();
  ca.serialNumber = serial();
  ca.publicKey = caKeys.publicKey;
  validity(ca, 3650);
  const caName = [{ name: 'commonName', value: 'taskgraph-emulator-ca' }];
  ca.setSubject(caName);
  ca.setIssuer(caName);
  ca.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  ca.sign(caKeys.privateKey, forge.md.sha256.create());

  const names = [...new Set(['localhost', '127.0.0.1', '::1', ...hosts])];
  const server = forge.pki.createCertificate();
  server.serialNumber = serial();
  server.publicKey = serverKeys.publicKey;
  validity(server, 365);
  server.setSubject([{ name: 'commonName', value: 'kube-apiserver' }]);
  server.setIssuer(caName);
  server.setExtensions([
    { name: 'basicConstraints', cA: false, critical: true },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'subjectAltName', altNames: names.map((n) => (isIP(n) === 0 ? { type: 2, value: n } : { type: 7, ip: n })) },
    { name: 'subjectKeyIdentifier' },
    { name: 'authorityKeyIdentifier', keyIdentifier: ca.generateSubjectKeyIdentifier().getBytes() },
  ]);
  server.sign(caKeys.privateKey, forge.md.sha256.create());

  return { ca: forge.pki.certificateToPem(ca), cert: forge.pki.certificateToPem(server), key: serverKeys.pem };
}
