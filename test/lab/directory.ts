/**
 * The lab's user directory: who may sign in (extension + PIN), and which client certificates
 * are published to each user's record. The registrar and the SBA both trust a certificate only
 * when the CA issued it AND it is published here, as a real pool checks the user's record.
 */
import { certFingerprint } from "./ca.ts";

export interface LabUser {
  extension: string;
  pin: string;
  uri: string;
  displayName: string;
  published: Set<string>;
  revoked: Set<string>;
}

export class UserDirectory {
  private readonly users = new Map<string, LabUser>();

  constructor(readonly domain: string) {}

  add(extension: string, pin: string, displayName = `User ${extension}`): LabUser {
    const user: LabUser = {
      extension,
      pin,
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
