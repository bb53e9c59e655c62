#!/usr/bin/env python3
"""How much Home Assistant's recorder writes for clefd's sensors: a real Home Assistant
(run this with the Python of a venv where `homeassistant` is installed) connected to the
broker at 127.0.0.1:PORT with MQTT discovery, for SECONDS; then the rows and distinct
attribute sets it stored per clefd entity, and any error in its log.

    scripts/ha-recorder.py PORT SECONDS [WORKDIR]

Start mosquitto and `clefd run` (with `mqtt.home_assistant = true`) on that broker first.
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

port, seconds = int(sys.argv[1]), float(sys.argv[2])
work = sys.argv[3] if len(sys.argv) > 3 else tempfile.mkdtemp(prefix="ha-recorder-")
os.makedirs(os.path.join(work, ".storage"), exist_ok=True)
with open(os.path.join(work, "configuration.yaml"), "w") as f:
    f.write("homeassistant:\n  name: clefd\n  unit_system: metric\n  time_zone: UTC\n"
            "  latitude: 0\n  longitude: 0\n  elevation: 0\n"
            "recorder:\n  commit_interval: 1\nlogger:\n  default: warning\n")
# The MQTT integration is set up through the UI only: seed its config entry (HA migrates
# the older storage versions on start).
entry = {
    "entry_id": "clefdmqtt0000000000000000000000",
    "version": 1,
    "minor_version": 1,
    "domain": "mqtt",
    "title": "127.0.0.1",
    "data": {"broker": "127.0.0.1", "port": port, "discovery": True},
    "options": {},
    "pref_disable_new_entities": False,
    "pref_disable_polling": False,
    "source": "user",
    "unique_id": None,
    "disabled_by": None,
}
with open(os.path.join(work, ".storage", "core.config_entries"), "w") as f:
    json.dump({"version": 1, "minor_version": 1, "key": "core.config_entries", "data": {"entries": [entry]}}, f)

hass = os.path.join(os.path.dirname(sys.executable), "hass")
log = open(os.path.join(work, "hass.out"), "w")
proc = subprocess.Popen([hass, "-c", work, "--log-file", os.path.join(work, "hass.log")], stdout=log, stderr=log)
time.sleep(seconds)
proc.send_signal(signal.SIGTERM)
proc.wait(timeout=120)

# clefd's entities: MQTT entities whose unique id clefd gave (their entity ids depend on
# the Home Assistant version: `default_entity_id` is read from 2025.10 on).
with open(os.path.join(work, ".storage", "core.entity_registry")) as f:
    registry = json.load(f)["data"]["entities"]
ours = sorted(e["entity_id"] for e in registry if e["platform"] == "mqtt" and e["unique_id"].startswith("clefd_"))
marks = ",".join("?" * len(ours))
db = sqlite3.connect(os.path.join(work, "home-assistant_v2.db"))
rows = db.execute(
    "SELECT m.entity_id, COUNT(*), COUNT(DISTINCT s.attributes_id), COUNT(DISTINCT s.state) "
    "FROM states s JOIN states_meta m ON s.metadata_id = m.metadata_id "
    f"WHERE m.entity_id IN ({marks}) GROUP BY m.entity_id ORDER BY m.entity_id",
    ours,
).fetchall()
total_rows = sum(r[1] for r in rows)
print(f"{'entity':48} rows  attribute-sets  states")
for entity, n, attrs, states in rows:
    print(f"{entity:48} {n:4}  {attrs:14}  {states:6}")
attrs = db.execute(
    "SELECT COUNT(DISTINCT s.attributes_id) FROM states s JOIN states_meta m ON s.metadata_id = m.metadata_id "
    f"WHERE m.entity_id IN ({marks})",
    ours,
).fetchone()[0]
print(f"total: {total_rows} state rows, {attrs} distinct attribute sets over {seconds:.0f} s")
text = open(os.path.join(work, "hass.log")).read()
errors = [line for line in text.splitlines() if " ERROR " in line]
print(f"errors in Home Assistant's log: {len(errors)}")
for line in errors[:20]:
    print("  " + line)
sys.exit(0 if rows else 1)
