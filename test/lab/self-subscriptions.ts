/**
 * The self-subscriptions a Lync 2013 / Skype for Business front end serves to a signed-in
 * endpoint, and its answer to SERVICE: what a desktop client (libpurple SIPE, Lync) subscribes
 * to right after REGISTER. The registrar (registrar.ts) dispatches SUBSCRIBE and SERVICE here
 * once their signature verified, and does the sending and signing; this module only decides the
 * answer and writes the bodies. Everything is minimal but valid against the published schemas:
 *
 * - vnd-microsoft-provisioning-v2 ([MS-SIPREGE] §2.2.2.1–§2.2.2.5, example §4.2.2): a one-shot
 *   fetch ("This subscription does not establish a dialog, so the Expires header is added with a
 *   value of zero", §2.2.2.2); body application/vnd-microsoft-roaming-provisioning-v2+xml, a
 *   provisionGroupList (namespace …/2006/09/sip/provisiongrouplist-notification) with the
 *   requested groups we know: ServerConfiguration (empty: §2.2.2.5 allows "an arbitrary
 *   sequence of elements") and endpointConfiguration (a propertyEntryList, as in §4.2.2).
 * - vnd-microsoft-roaming-self ([MS-PRES] §4.4.1 request, §4.4.3 notification): body
 *   application/vnd-microsoft-roaming-self+xml, a roamingData with the user's own categories
 *   (one aggregateState, availability 3500 = online), no containers and no subscribers (the
 *   subscribers document of [MS-PRES] §2.2.2.6.1, whose subscriber element is minOccurs 0).
 * - vnd-microsoft-roaming-contacts ([MS-SIP] §2.2.4.1, §3.7.4.1, §3.7 "Contacts must be in at
 *   least one group"): body application/vnd-microsoft-roaming-contacts+xml, a full contactList
 *   (deltaNum 1, non-zero as [MS-SIP] requires) with one group, "~" (the default group), and no
 *   contacts. No namespace on contactList: what SIPE parses; [MS-SIP] §9.1's schema names
 *   http://schemas.microsoft.com/sip/types as its target namespace, which we do not claim.
 * - presence.wpending: body text/xml+msrtc.wpending (the Accept SIPE sends), an empty
 *   <watchers/> (SIPE reads watcher children of the root). No published schema was found for
 *   this document: the shape is UNCONFIRMED beyond what SIPE reads.
 *
 * First notification: in the 200 itself (a "piggyback NOTIFY", with ms-piggyback-cseq) when the
 * SUBSCRIBE says `Supported: ms-piggyback-first-notify`, else in a NOTIFY on the subscriber's flow
 * ([MS-SIPREGE] §2.2.2.2: "If the UAC does not indicate support for this extension, the in-band
 * provisioning response is sent using a NOTIFY request"; [MS-SIP] §3.7.4.1 the same for
 * contacts). Later changes (BENOTIFY) are not modelled: nothing in the lab changes them.
 *
 * SERVICE ([MS-PRES] §2.2.2.6.2, §4.8.1: publications, setSubscribers, contact management):
 * a 200 with no body, as in the §4.8.1 example; nothing is stored.
 */
import { DOMParser } from "@xmldom/xmldom";
import { header, headerList, type SipRequest } from "../../firmware/sip/message/message.ts";

export const SELF_EVENTS = {
  "vnd-microsoft-provisioning-v2": {
    contentType: "application/vnd-microsoft-roaming-provisioning-v2+xml",
    oneShot: true,
  },
  "vnd-microsoft-roaming-self": { contentType: "application/vnd-microsoft-roaming-self+xml", oneShot: false },
  "vnd-microsoft-roaming-contacts": {
    contentType: "application/vnd-microsoft-roaming-contacts+xml",
    oneShot: false,
  },
  "presence.wpending": { contentType: "text/xml+msrtc.wpending", oneShot: false },
} as const;

export type SelfEvent = keyof typeof SELF_EVENTS;

/** The Event package of a SUBSCRIBE (lower-case, parameters dropped), if it is one we serve. */
export function selfEventOf(req: SipRequest): SelfEvent | undefined {
  const event = (header(req, "Event") ?? header(req, "o") ?? "").split(";")[0]!.trim().toLowerCase();
  return Object.keys(SELF_EVENTS).find((e) => e.toLowerCase() === event) as SelfEvent | undefined;
}

/** Subscription lifetime (s) when the SUBSCRIBE names none, and the most we grant. */
export const DEFAULT_SUBSCRIPTION_S = 3600;
export const MAX_SUBSCRIPTION_S = 86_400;

export interface SelfSubscriptionContext {
  /** The subscriber's AOR (sip:4711@lab.test). */
  aor: string;
  /** The front end's FQDN (its Contact in the 200). */
  fqdn: string;
  /** CSeq number of the notification this answer carries (piggybacked or NOTIFY). */
  notifyCseq: number;
}

export interface SubscribeAnswer {
  /** Headers of the 200 beyond the dialog ones (Via, From, To, Call-ID, CSeq). */
  headers: Array<[string, string]>;
  /** Piggybacked notification body (Content-Type is among the headers). */
  body?: string;
  /** A NOTIFY to send on the subscriber's flow: its extra headers (Event, Subscription-State, Content-Type) and body. */
  notify?: { headers: Array<[string, string]>; body: string };
}

function supports(req: SipRequest, tag: string): boolean {
  return headerList(req, "Supported").some((t) => t.trim().toLowerCase() === tag);
}

/**
 * The answer to a SUBSCRIBE for one of SELF_EVENTS from the user to itself: expiry, state, the
 * first notification (piggybacked or as a NOTIFY). An unsubscribe (Expires: 0 on a lasting
 * subscription) is answered 200 with a terminated state and a final NOTIFY without body.
 */
export function answerSelfSubscribe(
  req: SipRequest,
  event: SelfEvent,
  ctx: SelfSubscriptionContext,
): SubscribeAnswer {
  const spec = SELF_EVENTS[event];
  const asked = Number.parseInt(header(req, "Expires") ?? "", 10);
  const expires = spec.oneShot
    ? 0
    : Number.isFinite(asked) && asked >= 0
      ? Math.min(asked, MAX_SUBSCRIPTION_S)
      : DEFAULT_SUBSCRIPTION_S;
  const state = expires === 0 ? "terminated;expires=0" : `active;expires=${expires}`;
  const headers: Array<[string, string]> = [
    ["Contact", `<sip:${ctx.fqdn}:5061;transport=tls>`],
    ["Expires", String(expires)],
    ["Event", event],
  ];
  if (!spec.oneShot && expires === 0) {
    // Unsubscribe: no state to send, the subscription ends with a bodiless NOTIFY (RFC 6665 §4.2.1.4).
    headers.push(["subscription-state", "terminated;reason=timeout"]);
    return {
      headers,
      notify: {
        headers: [
          ["Event", event],
          ["Subscription-State", "terminated;reason=timeout"],
        ],
        body: "",
      },
    };
  }
  const body = bodyFor(event, req, ctx);
  if (supports(req, "ms-piggyback-first-notify")) {
    headers.push(
      ["Content-Type", spec.contentType],
      ["subscription-state", state],
      ["ms-piggyback-cseq", String(ctx.notifyCseq)],
      ["Supported", "ms-benotify, ms-piggyback-first-notify"],
    );
    return { headers, body };
  }
  return {
    headers,
    notify: {
      headers: [
        ["Event", event],
        ["Subscription-State", state],
        ["Content-Type", spec.contentType],
      ],
      body,
    },
  };
}

/** The answer to SERVICE (publications, setSubscribers, contact changes): accepted, nothing kept. */
export function answerService(): { status: number; reason: string } {
  return { status: 200, reason: "OK" };
}

export function bodyFor(event: SelfEvent, req: SipRequest, ctx: SelfSubscriptionContext): string {
  switch (event) {
    case "vnd-microsoft-provisioning-v2":
      return provisioningBody(requestedGroups(req));
    case "vnd-microsoft-roaming-self":
      return roamingSelfBody(ctx.aor);
    case "vnd-microsoft-roaming-contacts":
      return contactListBody();
    case "presence.wpending":
      return "<watchers/>";
  }
}

function xmlEscape(s: string): string {
  return s.replace(
    /[<>&"']/g,
    (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;", "'": "&apos;" })[c]!,
  );
}

/** The provisioning groups a vnd-microsoft-provisioning-v2 SUBSCRIBE asks for ([MS-SIPREGE] §2.2.2.4). */
export function requestedGroups(req: SipRequest): string[] {
  const text = req.body.toString("utf8").trim();
  if (!text) return [];
  try {
    const doc = new DOMParser({ onError: () => {} }).parseFromString(text, "text/xml");
    const list = doc.getElementsByTagNameNS("*", "provisioningGroup");
    const names: string[] = [];
    for (let i = 0; i < list.length; i++) {
      const name = list.item(i)?.getAttribute("name");
      if (name) names.push(name);
    }
    return names;
  } catch {
    return [];
  }
}

const PROVISION_NS = "http://schemas.microsoft.com/2006/09/sip/provisiongrouplist-notification";

const KNOWN_GROUPS: Record<string, string> = {
  ServerConfiguration: '<provisionGroup name="ServerConfiguration"/>',
  endpointConfiguration:
    '<provisionGroup name="endpointConfiguration"><propertyEntryList>' +
    '<property name="EnableTracing">false</property>' +
    "</propertyEntryList></provisionGroup>",
};

/** provisionGroupList with the requested groups we know (all of them when none is named). */
export function provisioningBody(requested: string[]): string {
  const names = requested.length > 0 ? requested.filter((n) => n in KNOWN_GROUPS) : Object.keys(KNOWN_GROUPS);
  return `<provisionGroupList xmlns="${PROVISION_NS}">${names.map((n) => KNOWN_GROUPS[n]).join("")}</provisionGroupList>`;
}

/** roamingData: the user's own aggregate state (online), no containers, no subscribers ([MS-PRES] §4.4.3). */
export function roamingSelfBody(aor: string, publishTime = new Date()): string {
  const time = publishTime.toISOString().replace(/Z$/, "");
  return (
    '<roamingData xmlns="http://schemas.microsoft.com/2006/09/sip/roaming-self">' +
    `<categories xmlns="http://schemas.microsoft.com/2006/09/sip/categories" uri="${xmlEscape(aor)}">` +
    `<category name="state" instance="1" publishTime="${time}" container="2" version="1" expireType="user">` +
    '<state xsi:type="aggregateState" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"' +
    ' xmlns="http://schemas.microsoft.com/2006/09/sip/state"><availability>3500</availability></state>' +
    "</category></categories>" +
    '<containers xmlns="http://schemas.microsoft.com/2006/09/sip/containers"/>' +
    '<subscribers xmlns="http://schemas.microsoft.com/2006/09/sip/presence-subscribers"/>' +
    "</roamingData>"
  );
}

/** A full contact list with the default group and no contacts ([MS-SIP] §2.2.4.1). */
export function contactListBody(deltaNum = 1): string {
  return `<contactList deltaNum="${deltaNum}"><group id="1" name="~" externalURI=""/></contactList>`;
}
