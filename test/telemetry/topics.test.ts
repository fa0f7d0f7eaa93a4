/** firmware/telemetry/topics.ts: the topic tree, and which incoming topics are this phone's. */
import { describe, expect, it } from "vitest";
import { fleetTopics, isFleetTopic, parseTopic } from "../../firmware/telemetry/topics.ts";

const t = fleetTopics("handset/v1", "phone-1", "hq");

describe("fleet topics", () => {
  it("names every topic under the prefix", () => {
    expect(t.state).toBe("handset/v1/phone-1/state");
    expect(t.event).toBe("handset/v1/phone-1/event");
    expect(t.desired).toBe("handset/v1/phone-1/config/desired");
    expect(t.reported).toBe("handset/v1/phone-1/config/reported");
    expect(t.cmd("reboot")).toBe("handset/v1/phone-1/cmd/reboot");
    expect(t.orgDesired).toBe("handset/v1/org/config/desired");
    expect(t.siteDesired).toBe("handset/v1/site/hq/config/desired");
    expect(t.subscriptions).toEqual([
      "handset/v1/phone-1/cmd/+",
      "handset/v1/phone-1/config/desired",
      "handset/v1/org/config/desired",
      "handset/v1/site/hq/config/desired",
    ]);
  });

  it("without a site there is no site layer", () => {
    const n = fleetTopics("fleet", "p");
    expect(n.siteDesired).toBeUndefined();
    expect(n.subscriptions).toEqual(["fleet/p/cmd/+", "fleet/p/config/desired", "fleet/org/config/desired"]);
    expect(parseTopic(n, "fleet/site/hq/config/desired")).toBeUndefined();
  });

  it("parses commands and desired layers on this phone's own topics", () => {
    expect(parseTopic(t, "handset/v1/phone-1/cmd/ping")).toEqual({ kind: "cmd", name: "ping" });
    expect(parseTopic(t, "handset/v1/phone-1/cmd/made-up")).toEqual({ kind: "cmd", name: "made-up" });
    expect(parseTopic(t, "handset/v1/phone-1/config/desired")).toEqual({ kind: "desired", layer: "device" });
    expect(parseTopic(t, "handset/v1/org/config/desired")).toEqual({ kind: "desired", layer: "org" });
    expect(parseTopic(t, "handset/v1/site/hq/config/desired")).toEqual({ kind: "desired", layer: "site" });
  });

  it("ignores another phone's topics, other sites, deeper levels and its own outgoing topics", () => {
    for (const topic of [
      "handset/v1/phone-2/cmd/reboot",
      "handset/v1/phone-10/cmd/reboot",
      "handset/v1/phone-2/config/desired",
      "handset/v1/site/branch/config/desired",
      "handset/v1/phone-1/cmd/",
      "handset/v1/phone-1/cmd/reboot/now",
      "handset/v1/phone-1/cmd",
      "handset/v1/phone-1/state",
      "handset/v1/phone-1/config/reported",
      "other/v1/phone-1/cmd/reboot",
      "handset/v1/phone-1x/cmd/reboot",
      "handset/v1/phone-1/cmd/+",
    ])
      expect(parseTopic(t, topic), topic).toBeUndefined();
  });

  it("refuses a device id that is a reserved level or not one level, and a bad prefix", () => {
    for (const id of ["org", "site", "a/b", "#", "x+", ""])
      expect(() => fleetTopics("handset/v1", id), id).toThrow(/device id/);
    for (const prefix of ["", "a/", "a/#", "a+b"])
      expect(() => fleetTopics(prefix, "p"), prefix).toThrow(/prefix/);
    expect(() => fleetTopics("p", "d", "a/b")).toThrow(/site/);
  });

  it("knows the fleet's own topics (never a reply target)", () => {
    for (const topic of [
      "handset/v1/phone-2/cmd/reboot",
      "handset/v1/phone-1/state",
      "handset/v1/x/event",
      "handset/v1/x/config/desired",
      "handset/v1/x/config/reported",
      "handset/v1/org/config/desired",
      "handset/v1/site/hq/config/desired",
    ])
      expect(isFleetTopic("handset/v1", topic), topic).toBe(true);
    for (const topic of ["handset/v1/reply/ops/42", "ops/replies/1", "handset/v1x/p/state"])
      expect(isFleetTopic("handset/v1", topic), topic).toBe(false);
  });
});
