// CSV cells: quoting, and text a spreadsheet would run as a formula kept as text.
import assert from "node:assert/strict";
import test from "node:test";

import { csvCell } from "../../radiology/static/radiology/csv.js";

test("a cell that starts like a formula is prefixed with '", () => {
  assert.deepEqual(
    ["=1+1", "-2", "+3", "@SUM(A1)", "\tx", "a=b"].map(csvCell),
    ["'=1+1", "'-2", "'+3", "'@SUM(A1)", "'\tx", "a=b"],
  );
});

test("commas, quotes and line breaks are quoted", () => {
  assert.deepEqual(['x,y', 'say "hi"', "two\nlines"].map(csvCell), ['"x,y"', '"say ""hi"""', '"two\nlines"']);
});

test("missing values are empty and objects are JSON", () => {
  assert.deepEqual([null, undefined, 0, { a: 1 }].map(csvCell), ["", "", "0", '"{""a"":1}"']);
});
