/** autoboot.txt: the strict parser, the renderer, and which file wins after a lost rename. */
import { describe, expect, it } from "vitest";
import { HandsetError } from "../../firmware/core/errors.ts";
import { chooseAutoboot, parseAutoboot, renderAutoboot } from "../../firmware/update/autoboot.ts";

const A = "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n";

function code(f: () => unknown): string | undefined {
  try {
    f();
    return undefined;
  } catch (e) {
    return e instanceof HandsetError ? e.code : "not-a-handset-error";
  }
}

describe("autoboot.txt", () => {
  it("reads the Pi firmware's format (slot A current) and renders it back byte for byte", () => {
    expect(parseAutoboot(A)).toEqual({ committed: 2, tryboot: 3 });
    expect(renderAutoboot(2)).toBe(A);
    expect(parseAutoboot(renderAutoboot(3))).toEqual({ committed: 3, tryboot: 2 });
  });

  it("takes comments, blank lines, CRLF and spaces around values", () => {
    const text =
      "# handset A/B\r\n\r\n[all]\r\ntryboot_a_b=1\r\nboot_partition= 3\r\n\r\n[tryboot]\r\nboot_partition=2\r\n";
    expect(parseAutoboot(text)).toEqual({ committed: 3, tryboot: 2 });
  });

  it("refuses every prefix of a good file (a half-written one)", () => {
    for (const text of [renderAutoboot(2), renderAutoboot(3)])
      for (let n = 0; n < text.length; n++)
        expect(
          code(() => parseAutoboot(text.slice(0, n))),
          `${n}`,
        ).toBe("autoboot-malformed");
  });

  it("refuses a file padded with NULs (a FAT cluster allocated but never written)", () => {
    expect(code(() => parseAutoboot(`${A.slice(0, 30)}\0\0\0\0\n`))).toBe("autoboot-malformed");
    expect(code(() => parseAutoboot(`${A}\0\0\n`))).toBe("autoboot-malformed");
  });

  it("refuses unknown keys and sections, duplicates, bad values, the same partition twice", () => {
    const bad = [
      A.replace("tryboot_a_b=1\n", "tryboot_a_b=1\nkernel=vmlinuz\n"),
      A.replace("[tryboot]\nboot_partition=3\n", "[tryboot]\nboot_partition=3\ntryboot_a_b=1\n"),
      `${A}[none]\nboot_partition=2\n`,
      `${A}[all]\nboot_partition=2\n`,
      A.replace("boot_partition=2\n", "boot_partition=2\nboot_partition=2\n"),
      A.replace("boot_partition=2", "boot_partition=4"),
      A.replace("boot_partition=2", "boot_partition=x"),
      A.replace("boot_partition=3", "boot_partition=2"),
      A.replace("tryboot_a_b=1", "tryboot_a_b=0"),
      A.replace("tryboot_a_b=1\n", ""),
      `boot_partition=2\n${A}`,
      "",
      "garbage\n",
    ];
    for (const t of bad)
      expect(
        code(() => parseAutoboot(t)),
        JSON.stringify(t),
      ).toBe("autoboot-malformed");
  });

  it("after a write: autoboot.txt wins when valid; .new only when autoboot.txt is damaged or gone", () => {
    const B = renderAutoboot(3);
    expect(chooseAutoboot(A, undefined)).toEqual({
      autoboot: { committed: 2, tryboot: 3 },
      from: "autoboot.txt",
      repair: "none",
    });
    // the rename never happened: the firmware reads autoboot.txt, which is the truth; .new is debris
    expect(chooseAutoboot(A, B)).toMatchObject({ autoboot: { committed: 2 }, repair: "remove-new" });
    expect(chooseAutoboot(A, B.slice(0, 20))).toMatchObject({
      autoboot: { committed: 2 },
      repair: "remove-new",
    });
    // the rename was half done (autoboot.txt damaged or missing) and .new is complete
    expect(chooseAutoboot(A.slice(0, 25), B)).toEqual({
      autoboot: { committed: 3, tryboot: 2 },
      from: "autoboot.txt.new",
      repair: "rename-new",
    });
    expect(chooseAutoboot(undefined, B)).toMatchObject({ from: "autoboot.txt.new", repair: "rename-new" });
    // neither is good
    expect(code(() => chooseAutoboot(A.slice(0, 25), B.slice(0, 25)))).toBe("autoboot-malformed");
    expect(code(() => chooseAutoboot(undefined, undefined))).toBe("autoboot-malformed");
  });
});
