"""Print the failed and errored tests of a pytest JUnit XML report, each with the
head of its message, so the end of a CI log names what broke."""

import sys
import xml.etree.ElementTree as ET

LINES_PER_FAILURE = 25


def main(path: str) -> int:
    root = ET.parse(path).getroot()
    bad = []
    for case in root.iter("testcase"):
        for kind in ("failure", "error"):
            for node in case.findall(kind):
                bad.append((kind, f"{case.get('classname')}::{case.get('name')}", node))
    print(f"--- {len(bad)} failed or errored test(s) in {path} ---")
    for kind, name, node in bad:
        print(f"{kind.upper()} {name}: {node.get('message', '')[:300]}")
        text = (node.text or "").splitlines()
        for line in text[-LINES_PER_FAILURE:]:
            print(f"    {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
