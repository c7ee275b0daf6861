#!/usr/bin/env python3
"""Make the voicemail recordings the tests and scripts/bench_transcribe.py use.

Speaks each sentence with one of several Debian text-to-speech voices (espeak-ng, flite,
festival), then turns it into what a PBX attaches: 8 kHz mono WAV in G.711 µ-law, A-law or
GSM 6.10 (sox). Writes libs/speech/tests/fixtures/voicemail/*.wav and references.json
(file, reference text as written, voice, encoding). Run once; the outputs are committed.
Needs (not in CI): apt-get install espeak-ng flite festival sox.

    uv run --frozen --no-sync python scripts/make_voicemail_fixtures.py
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from postroom_speech.wer import normalise

OUT = Path(__file__).resolve().parents[1] / "libs/speech/tests/fixtures/voicemail"

VOICES = [
    ("espeak-en-us", ["espeak-ng", "-v", "en-us", "-s", "155", "-w", "{out}", "{text}"]),
    ("flite-slt", ["flite", "-voice", "slt", "-t", "{text}", "-o", "{out}"]),
    ("espeak-en-gb-f3", ["espeak-ng", "-v", "en-gb+f3", "-s", "150", "-w", "{out}", "{text}"]),
    ("flite-awb", ["flite", "-voice", "awb", "-t", "{text}", "-o", "{out}"]),
    ("festival-kal", ["text2wave", "-eval", "(voice_kal_diphone)", "-o", "{out}", "{file}"]),
    ("flite-rms", ["flite", "-voice", "rms", "-t", "{text}", "-o", "{out}"]),
    ("espeak-en-gb-scotland", ["espeak-ng", "-v", "en-gb-scotland", "-s", "150", "-w", "{out}",
                               "{text}"]),
    ("flite-kal", ["flite", "-voice", "kal", "-t", "{text}", "-o", "{out}"]),
]
ENCODINGS = [("ulaw", ["-e", "u-law"]), ("alaw", ["-e", "a-law"]),
             ("gsm", ["-e", "gsm-full-rate"])]

SENTENCES = [
    "Hi Alice, this is Robert Miller from Contoso, please call me back at 3:30 this afternoon.",
    "Good morning, it's Sarah calling about the delivery of 250 boxes scheduled for Monday.",
    "Hello, this is David from the bank, your appointment is confirmed for Tuesday at 10 am.",
    "Hey Peter, the meeting with the board has moved to Thursday at 2 pm in room 14.",
    "This is Linda Chen, I need the signed contract back by Friday, my number is 555 0142.",
    "Hi, this is Tom from accounting, invoice 4512 is still open, could you check it please?",
    "Hello John, it's your dentist's office reminding you of your visit on the 21st at 9 am.",
    "Good afternoon, this is Maria Lopez, we would like to order 40 chairs and 12 tables.",
    "Hi Emma, the train arrives at 6:45, so I will be at the office around seven thirty.",
    "This is Michael from the warehouse, the truck left at 8 with 3 pallets for your site.",
    "Hello, it's Karen, please move our call to Wednesday morning, any time after 11 works.",
    "Hi Paul, this is James, the server will be down for maintenance from midnight to 4 am.",
    "Good evening, this is Anna calling from the hotel about your reservation for 2 nights.",
    "Hello, this is Steven Wright, my flight lands at 5:15, I will call you when I land.",
    "Hi, it's Olivia from the school, your son needs to be picked up at 1 pm today.",
    "This is Daniel from the garage, your car is ready and the total comes to 380 dollars.",
    "Hello Susan, this is Mark, the quarterly report is due on the 30th of June.",
    "Hi there, it's Laura, I left the keys at the front desk, ask for Mr Thompson.",
    "Good morning, this is Brian from support, ticket number 7731 has been resolved.",
    "Hello, it's Rachel from human resources, your interview is set for 10:30 on Monday.",
    "Hi George, this is Helen, we need 6 more laptops for the new team by next week.",
    "This is Kevin from the city council, the inspection is booked for 9 am on Tuesday.",
    "Hello, this is Nancy, I am running 15 minutes late, please start the meeting without me.",
    "Hi, it's Chris from the print shop, your 500 brochures will be ready at noon tomorrow.",
    "Good afternoon, this is Patricia calling to confirm dinner for 8 people at 7 pm.",
    "Hello Frank, this is Victor, the shipment from Hamburg arrives on the 3rd of May.",
    "Hi, this is Jessica, could you send me the price list and the order form today?",
    "This is Andrew from the insurance company, please call me back on extension 2048.",
    "Hello, it's Megan, the conference room on the 5th floor is booked until 4 pm.",
    "Hi Richard, this is Joseph, we finished the audit and found 2 small issues.",
    "Good morning, this is Sandra, the cleaning crew will come on Saturday at 8 am.",
    "Hello, this is Eric from the bakery, the cake for 30 guests will be delivered at noon.",
    "Hi Barbara, it's William, please remind everyone that the office closes at 5 on Friday.",
    "This is Dorothy from the clinic, your test results are ready, call us before 6 pm.",
    "Hello, it's Timothy, I sent the 3 drawings by email, let me know what you think.",
    "Hi, this is Angela, the parking garage will be closed from Monday to Wednesday.",
]

# for the tests: short, with key words the tests look for
TEST_CLIPS = {
    "test_ulaw.wav": ("espeak-en-us", "ulaw",
                      "Hello, this is Robert from Contoso. Please call me back about the "
                      "invoice before Friday."),
    "test_long_gsm.wav": ("flite-slt", "gsm",
                          "Good morning Alice. This is Maria calling about the delivery. "
                          "The truck left the warehouse at eight this morning. "
                          "It should arrive before noon. Please call me back today."),
}


def spoken(text: str) -> str:
    """What the voice is given: numbers and times in words, clause by clause."""
    clauses = [normalise(c) for c in re.split(r"[,.;?!]", text)]
    return ", ".join(c for c in clauses if c) + "."


def speak(voice: str, text: str, out: Path, tmp: Path) -> None:
    command = dict(VOICES)[voice]
    text_file = tmp / "text.txt"
    text_file.write_text(text)
    argv = [a.format(out=out, text=text, file=text_file) for a in command]
    subprocess.run(argv, check=True, capture_output=True)


def convert(source: Path, target: Path, encoding: str) -> None:
    options = dict(ENCODINGS)[encoding]
    subprocess.run(["sox", str(source), "-r", "8000", "-c", "1", *options, str(target)],
                   check=True, capture_output=True)


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    refs = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for i, text in enumerate(SENTENCES):
            voice = VOICES[i % len(VOICES)][0]
            encoding = ENCODINGS[i % len(ENCODINGS)][0]
            name = f"vm{i:02d}_{voice}_{encoding}.wav"
            speak(voice, spoken(text), tmp / "tts.wav", tmp)
            convert(tmp / "tts.wav", OUT / name, encoding)
            refs.append({"file": name, "text": text, "voice": voice, "encoding": encoding})
        for name, (voice, encoding, text) in TEST_CLIPS.items():
            speak(voice, spoken(text), tmp / "tts.wav", tmp)
            convert(tmp / "tts.wav", OUT / name, encoding)
    (OUT / "references.json").write_text(json.dumps(
        {"sentences": refs, "tests": {k: v[2] for k, v in TEST_CLIPS.items()}}, indent=1) + "\n")
    total = sum(p.stat().st_size for p in OUT.glob("*.wav"))
    print(f"{len(refs)} sentences + {len(TEST_CLIPS)} test clips, {total / 1e6:.2f} MB in {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
