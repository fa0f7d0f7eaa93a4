/**
 * The lab's user directory: who may sign in (extension + PIN, and with Windows credentials when the
 * user has a password: NTLM on the web ticket service's WinNegotiate port), and which client certificates
 * are published to each user's record. The registrar and the SBA both trust a certificate only
 * when the CA issued it AND it is published here, as a real pool checks the user's record.
 */
import { certFingerprint } from "./ca.ts";

export interface LabUser {
  extension: string;
  pin: string;
  /** The user's Windows (AD) password, for NTLM; none → the user cannot sign in with NTLM. */
  password?: string | undefined;
  uri: string;
  displayName: string;
  published: Set<string>;
  revoked: Set<string>;
}

export class UserDirectory {
  private readonly users = new Map<string, LabUser>();

  constructor(readonly domain: string) {}

  add(extension: string, pin: string, displayName = `User ${extension}`, password?: string): LabUser {
    const user: LabUser = {
      extension,
      pin,
      ...(password !== undefined ? { password } : {}),
      uri: `sip:${extension}@${this.domain}`,
      displayName,
      published: new Set(),
      revoked: new Set(),
    };
    this.users.set(extension, user);
    return user;
  }

  byExtension(extension: string): LabUser | undefined {
    return this.users.get(extension);
  }

  byUri(uri: string): LabUser | undefined {
    const wanted = uri.toLowerCase();
    for (const u of this.users.values()) if (u.uri.toLowerCase() === wanted) return u;
    return undefined;
  }

  /**
   * The user a Windows logon names: the account name is the extension, written alone ("4711"),
   * as a UPN ("4711@lab.test") or as the SIP URI's user part; case does not matter.
   */
  byAccount(account: string): LabUser | undefined {
    const a = account.toLowerCase();
    const at = a.lastIndexOf("@");
    const name = at >= 0 && a.slice(at + 1) === this.domain.toLowerCase() ? a.slice(0, at) : a;
    return this.users.get(name);
  }

  all(): LabUser[] {
    return [...this.users.values()];
  }

  publish(user: LabUser, certPem: string): void {
    user.published.add(certFingerprint(certPem));
  }

  /** Revokes every certificate published for the user. */
  revokeAll(user: LabUser): void {
    for (const fp of user.published) user.revoked.add(fp);
    user.published.clear();
  }

  isPublished(uri: string, certPem: string): boolean {
    const user = this.byUri(uri);
    return !!user && user.published.has(certFingerprint(certPem));
  }

  isRevoked(uri: string, certPem: string): boolean {
    const user = this.byUri(uri);
    return !!user && user.revoked.has(certFingerprint(certPem));
  }
}
