/**
 * The fleet topic tree under a configurable prefix (issue 11):
 *
 *   PREFIX/DEVICE/state                retained state; the last will ("lost") lands here too
 *   PREFIX/DEVICE/event                QoS 1 events from the outbox
 *   PREFIX/DEVICE/config/desired       the operator's desired config for this phone (retained)
 *   PREFIX/DEVICE/config/reported      what the phone applied, deferred and refused (retained)
 *   PREFIX/DEVICE/cmd/NAME             commands (MQTT v5 request/response)
 *   PREFIX/org/config/desired          desired config for every phone     (layer "org")
 *   PREFIX/site/SITE/config/desired    desired config for a site's phones (layer "site")
 *
 * Pure: names in, names out. The parser recognises a command only on this phone's own topic,
 * whatever a broker (or a too-wide subscription) delivers.
 */
import { HandsetError } from "../core/errors.ts";

export type ConfigLayer = "org" | "site" | "device";

/** The three layers in merge order: a later one wins. */
export const CONFIG_LAYERS: readonly ConfigLayer[] = ["org", "site", "device"];

export interface FleetTopics {
  readonly state: string;
  readonly event: string;
  readonly desired: string;
  readonly reported: string;
  readonly orgDesired: string;
  readonly siteDesired?: string;
  cmd(name: string): string;
  /** What the phone subscribes to on every connection. */
  readonly subscriptions: readonly string[];
}

export type IncomingTopic = { kind: "cmd"; name: string } | { kind: "desired"; layer: ConfigLayer };

/** One topic level: no separator, no wildcard, no NUL (MQTT forbids it). */
const LEVEL = /^[^/#+\u0000]+$/;

/**
 * The phone's topics. "org" and "site" are reserved as device ids: PREFIX/org/config/desired is
 * the organisation's document, and a phone of that name would read it as its own.
 */
export function fleetTopics(prefix: string, deviceId: string, site?: string): FleetTopics {
  if (prefix === "" || prefix.endsWith("/") || /[#+\u0000]/.test(prefix))
    throw new HandsetError(
      "mqtt-topic",
      "the topic prefix must be non-empty, without wildcards or a trailing /",
    );
  if (!LEVEL.test(deviceId) || deviceId === "org" || deviceId === "site")
    throw new HandsetError("mqtt-topic", "the device id must be one topic level other than org or site");
  if (site !== undefined && !LEVEL.test(site))
    throw new HandsetError("mqtt-topic", "the site must be one topic level");
  const own = `${prefix}/${deviceId}`;
  const orgDesired = `${prefix}/org/config/desired`;
  const siteDesired = site === undefined ? undefined : `${prefix}/site/${site}/config/desired`;
  const desired = `${own}/config/desired`;
  return {
    state: `${own}/state`,
    event: `${own}/event`,
    desired,
    reported: `${own}/config/reported`,
    orgDesired,
    ...(siteDesired ? { siteDesired } : {}),
    cmd: (name) => `${own}/cmd/${name}`,
    subscriptions: [`${own}/cmd/+`, desired, orgDesired, ...(siteDesired ? [siteDesired] : [])],
  };
}

/** What an incoming topic means to this phone, or undefined when it is none of its business. */
export function parseTopic(topics: FleetTopics, topic: string): IncomingTopic | undefined {
  if (topic === topics.desired) return { kind: "desired", layer: "device" };
  if (topic === topics.orgDesired) return { kind: "desired", layer: "org" };
  if (topics.siteDesired !== undefined && topic === topics.siteDesired)
    return { kind: "desired", layer: "site" };
  const cmdPrefix = topics.cmd("");
  if (topic.startsWith(cmdPrefix)) {
    const name = topic.slice(cmdPrefix.length);
    if (LEVEL.test(name)) return { kind: "cmd", name };
  }
  return undefined;
}

/**
 * Whether a topic is one of the fleet's own (any phone's state, event, config or command topic,
 * or a layer's desired config). A reply is never published to one: a requester naming another
 * phone's cmd/reboot as its response topic must not make this phone send that phone a command.
 */
export function isFleetTopic(prefix: string, topic: string): boolean {
  if (!topic.startsWith(`${prefix}/`)) return false;
  const rest = topic.slice(prefix.length + 1);
  return (
    /^[^/]+\/(?:state|event|config\/(?:desired|reported)|cmd\/[^/]+)$/.test(rest) ||
    /^(?:org|site\/[^/]+)\/config\/desired$/.test(rest)
  );
}
