#!/usr/bin/env python
"""Build the tokenizer fixtures under tests/fixtures/tokenizer/.

No network: a small SentencePiece *unigram* model is trained on a generated multilingual corpus with XLM-R's
normalisation (`nmt_nfkc` precompiled charsmap, dummy prefix, extra-whitespace removal), then wrapped in
transformers' `XLMRobertaTokenizer` (fairseq id layout: <s>=0 <pad>=1 </s>=2 <unk>=3, sp ids + 1, <mask> last).

Outputs
  sp_only/      sentencepiece.bpe.model + tokenizer_config.json       (what BAAI/AltCLIP-m9 ships)
  with_json/    tokenizer.json + tokenizer_config.json + special_tokens_map.json (save_pretrained output,
                minus the sentencepiece copy to keep fixtures small)
  short/        tokenizer_config.json with model_max_length = 32 (used with either of the above)
  expected.json expected ids / masks, computed with transformers from BOTH directories (asserted equal)

Run:  /work/pyenv/bin/python scripts/make_tokenizer_fixtures.py
"""

import io
import json
import os
import random
import shutil
import tempfile

import sentencepiece as spm
from tokenizers import Tokenizer
from transformers import XLMRobertaTokenizer

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "tokenizer")

SENTENCES = {
    "en": [
        "A photo of a cat sitting on the table.",
        "Two dogs are running across the green field.",
        "The quick brown fox jumps over the lazy dog.",
        "A man riding a bicycle down the street at night.",
        "An astronaut floating in space above the earth.",
        "A bowl of fresh fruit with apples, bananas and oranges.",
        "The city skyline at sunset, with tall buildings and clouds.",
        "A little girl is playing with a red ball in the park.",
        "Children are reading books in the library.",
        "A painting of mountains and a lake in winter.",
    ],
    "fr": [
        "Une photo d'un chat assis sur la table.",
        "Le café est très chaud ce matin, à Paris.",
        "Ça coûte cinquante euros, déjà payé.",
        "Les élèves étudient la géographie et l'économie.",
        "Où est la bibliothèque, s'il vous plaît ?",
    ],
    "de": [
        "Ein Foto einer Katze, die auf dem Tisch sitzt.",
        "Die Straße ist nass, weil es geregnet hat.",
        "Größere Häuser kosten mehr Geld in München.",
        "Über den Wolken muss die Freiheit wohl grenzenlos sein.",
    ],
    "es": [
        "Una foto de un gato sentado en la mesa.",
        "El niño pequeño está jugando en el jardín.",
        "¿Dónde está la estación de tren? ¡Gracias!",
        "La canción más famosa del año pasado.",
    ],
    "pt": ["Uma foto de um gato sentado na mesa.", "A informação não está disponível, irmã."],
    "it": ["Una foto di un gatto seduto sul tavolo.", "Perché la città è così bella d'estate?"],
    "vi": ["Một bức ảnh của một con mèo ngồi trên bàn.", "Tiếng Việt có nhiều dấu thanh điệu."],
    "tr": ["Masanın üzerinde oturan bir kedinin fotoğrafı.", "Güzel bir gün, çok teşekkür ederim."],
    "pl": ["Zdjęcie kota siedzącego na stole.", "Źródło wiedzy jest w książkach, żółw śpi."],
    "ru": [
        "Фотография кошки, сидящей на столе.",
        "Две собаки бегут по зелёному полю.",
        "Москва — столица России, большой и красивый город.",
        "Ребёнок читает интересную книгу вечером.",
        "Мы любим гулять в парке летом и зимой.",
    ],
    "uk": ["Фотографія кота, який сидить на столі.", "Їжачок ґрунтовно шукає яблука."],
    "el": ["Μια φωτογραφία μιας γάτας που κάθεται στο τραπέζι.", "Καλημέρα, τι κάνεις σήμερα;"],
    "zh": [
        "一张猫坐在桌子上的照片。",
        "两只狗在绿色的田野上奔跑。",
        "北京是中国的首都，也是一座历史悠久的城市。",
        "小女孩在公园里玩红色的球。",
        "夕阳下的城市天际线，有高楼和云彩。",
        "我喜欢在图书馆里读书和学习。",
        "一个宇航员漂浮在地球上方的太空中。",
        "一碗新鲜的水果，有苹果、香蕉和橙子。",
    ],
    "zh_tw": ["一張貓坐在桌子上的照片。", "臺灣的夜市有很多好吃的東西。"],
    "ja": [
        "テーブルの上に座っている猫の写真。",
        "二匹の犬が緑の野原を走っています。",
        "東京は日本の首都で、とても大きな都市です。",
        "私は毎朝コーヒーを飲みながら新聞を読みます。",
        "ひらがなとカタカナと漢字を使います。",
        "桜の花が咲いている春の公園。",
    ],
    "ko": [
        "테이블 위에 앉아 있는 고양이 사진.",
        "두 마리의 개가 푸른 들판을 달리고 있다.",
        "서울은 한국의 수도이며 큰 도시입니다.",
        "아이들이 도서관에서 책을 읽고 있어요.",
        "저녁에 친구와 함께 맛있는 음식을 먹었다.",
    ],
    "ar": [
        "صورة قطة تجلس على الطاولة.",
        "كلبان يركضان عبر الحقل الأخضر.",
        "القاهرة هي عاصمة مصر ومدينة كبيرة.",
        "الأطفال يقرؤون الكتب في المكتبة.",
        "أحب شرب القهوة في الصباح.",
    ],
    "fa": ["عکسی از یک گربه که روی میز نشسته است.", "تهران پایتخت ایران است."],
    "he": ["תמונה של חתול שיושב על השולחן.", "ירושלים היא עיר עתיקה ויפה."],
    "hi": [
        "मेज़ पर बैठी एक बिल्ली की तस्वीर।",
        "दो कुत्ते हरे मैदान में दौड़ रहे हैं।",
        "नई दिल्ली भारत की राजधानी है।",
        "बच्चे पुस्तकालय में किताबें पढ़ रहे हैं।",
    ],
    "bn": ["টেবিলের উপর বসে থাকা একটি বিড়ালের ছবি।", "ঢাকা বাংলাদেশের রাজধানী।"],
    "ta": ["மேசையில் அமர்ந்திருக்கும் பூனையின் புகைப்படம்.", "சென்னை ஒரு பெரிய நகரம்."],
    "th": [
        "ภาพแมวนั่งอยู่บนโต๊ะ",
        "สุนัขสองตัวกำลังวิ่งข้ามทุ่งหญ้าสีเขียว",
        "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย",
        "เด็กๆ กำลังอ่านหนังสือในห้องสมุด",
    ],
    "id": ["Foto seekor kucing yang duduk di atas meja.", "Jakarta adalah ibu kota Indonesia."],
    "sw": ["Picha ya paka aliyeketi juu ya meza.", "Nairobi ni mji mkuu wa Kenya."],
    "emoji": ["I love pizza 🍕 and ice cream 🍦!", "Happy birthday 🎉🎂🎈", "Good morning ☀️ 😊 👍", "🐱 cat 🐶 dog"],
    "misc": [
        "Price: $12.99 (or €11,50) — 50% off!",
        "Call 555-0123 or e-mail info@example.com.",
        "The year 2024 had 366 days; 1,000,000 people came.",
        "C'est l'été. «Bonjour», dit-il.",
        "ＡＢＣ full-width １２３ and half-width ｶﾀｶﾅ.",
    ],
}

# Strings checked token-for-token, one at a time (no padding needed) and in batches.
TEST_STRINGS = [
    "a photo of a cat",
    "A photo of a dog.",
    "一张猫的照片",
    "北京是中国的首都。",
    "テーブルの上に座っている猫の写真",
    "ひらがな カタカナ 漢字",
    "고양이 사진",
    "서울은 한국의 수도입니다.",
    "صورة قطة",
    "القاهرة هي عاصمة مصر",
    "Фотография кошки",
    "Москва — столица России",
    "बिल्ली की तस्वीर",
    "नई दिल्ली भारत की राजधानी है।",
    "ภาพแมวนั่งอยู่บนโต๊ะ",
    "I love pizza 🍕!",
    "👨‍👩‍👧‍👦 family emoji (ZWJ sequence)",
    "🏳️‍🌈 flag and 👍🏽 skin tone",
    "café",  # precomposed é
    "cafe\u0301",  # e + combining acute
    "Ångström A\u030angstro\u0308m",
    "n\u0303 a\u0300\u0301\u0302 \u0301lone combining",
    "Tiếng Việt có nhiều dấu",
    "ＡＢＣ１２３ full-width",
    "ｶﾀｶﾅ half-width katakana",
    "ﬁ ﬂ ligatures ① ② ㍿ ㌀",
    "\u1100\u1161\u11a8 decomposed hangul",
    "x²+y³ ½ ™ ℃",
    "multiple    spaces   between words",
    "   leading and trailing spaces   ",
    "tabs\tand\nnewlines\r\nmixed",
    "\t\n  \t",
    "",
    " ",
    "          ",
    "\u3000ideographic\u3000space\u3000",
    "non\u00a0breaking\u00a0space",
    "zero\u200bwidth\u200cjoiners\u200d",
    "\ufeffBOM at start",
    "control\x00chars\x01\x02\x7f\x1b[0m",
    "rtl \u200fmark\u200e and \u202ebidi override",
    "variation selector ☃\ufe0f ❤\ufe0e",
    "<s> literal special tokens </s> <pad> <unk>",
    "a <mask> in the middle",
    "<mask>",
    "\uff1c\uff4d\uff41\uff53\uff4b\uff1e full-width mask, \uff1cs\uff1e full-width bos",
    "x<mask>y a\u3000<mask> b\t<mask>\nc",
    "unseen script: ᚠᛇᚻ ⴰⵣⵓⵍ ꦗꦮ 𓀀 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "Price: $12.99 (or €11,50) — 50% off!",
    "e-mail: info@example.com, http://example.org/a?b=c&d=e",
    "MiXeD CaSe WoRdS",
    "'quotes' \"double\" «guillemets» „German“ 「Japanese」",
    "...!!!???,,,;;;",
    "1234567890 ١٢٣٤٥٦٧٨٩٠ १२३४५",
    "the the the the the the the the the the the the the the the the the the the the the the the the the the the the the the the the the the",
    "一二三四五六七八九十一二三四五六七八九十一二三四五六七八九十一二三四五六七八九十",
]


def random_strings(n=150, seed=1):
    """Seeded random mixtures: corpus words, random code points from many blocks, odd whitespace, specials."""
    rng = random.Random(seed)
    words = " ".join(" ".join(v) for v in SENTENCES.values()).split()
    blocks = [
        (0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF),
        (0x900, 0x97F), (0xE00, 0xE7F), (0x1100, 0x11FF), (0x2000, 0x206F), (0x2100, 0x24FF),
        (0x3000, 0x30FF), (0x3200, 0x33FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xF900, 0xFAFF),
        (0xFB00, 0xFB4F), (0xFE00, 0xFE6F), (0xFF00, 0xFFEF), (0x1D400, 0x1D7FF), (0x1F300, 0x1FAFF),
        (0x0, 0x1F),
    ]
    spaces = [" ", "  ", "\t", "\n", "\u3000", "\u00a0", "\r\n", "   "]
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 12)):
            r = rng.random()
            if r < 0.4:
                parts.append(rng.choice(words))
            elif r < 0.8:
                lo, hi = rng.choice(blocks)
                parts.append("".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 6))))
            elif r < 0.95:
                parts.append(rng.choice(spaces))
            else:
                parts.append(rng.choice(["<mask>", "<s>", "</s>", "<pad>", "<unk>"]))
            if rng.random() < 0.6:
                parts.append(" ")
        out.append("".join(parts))
    return out


def make_corpus(seed=0, n_lines=6000):
    rng = random.Random(seed)
    langs = sorted(SENTENCES)
    lines = []
    for lang in langs:
        lines.extend(SENTENCES[lang])
    words = {lang: " ".join(s).split() for lang, s in SENTENCES.items()}
    chars = {lang: [c for c in "".join(s) if not c.isspace()] for lang, s in SENTENCES.items()}
    cjk = {"zh", "zh_tw", "ja", "th"}
    for _ in range(n_lines):
        lang = rng.choice(langs)
        if lang in cjk:
            k = rng.randint(4, 20)
            base = rng.choice(SENTENCES[lang])
            start = rng.randint(0, max(0, len(base) - 4))
            line = base[start : start + k] + "".join(rng.choice(chars[lang]) for _ in range(rng.randint(0, 3)))
        else:
            line = " ".join(rng.choice(words[lang]) for _ in range(rng.randint(3, 12)))
        lines.append(line)
    # A few bigger Unicode ranges so that many characters are known but rare.
    lines.append(" ".join(chr(c) for c in range(0x4E00, 0x4E00 + 400)))
    lines.append(" ".join(chr(c) for c in range(0xAC00, 0xAC00 + 200)))
    lines.append(" ".join(chr(c) for c in range(0x0400, 0x0460)))
    return lines


def train_spm(out_path):
    corpus = make_corpus()
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_writer=model,
        model_type="unigram",
        vocab_size=3000,
        hard_vocab_limit=False,
        character_coverage=0.9995,
        normalization_rule_name="nmt_nfkc",
        add_dummy_prefix=True,
        remove_extra_whitespaces=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=2,
        minloglevel=2,
    )
    with open(out_path, "wb") as f:
        f.write(model.getvalue())


# AltCLIP-m9's tokenizer_config.json layout (old style: no added_tokens_decoder).
def tokenizer_config(model_max_length):
    return {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "sep_token": "</s>",
        "cls_token": "<s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "mask_token": {
            "__type": "AddedToken",
            "content": "<mask>",
            "lstrip": True,
            "normalized": True,
            "rstrip": False,
            "single_word": False,
        },
        "model_max_length": model_max_length,
        "special_tokens_map_file": None,
        "tokenizer_class": "XLMRobertaTokenizer",
    }


def encode_all(tok):
    out = {}
    out["single"] = [tok(s)["input_ids"] for s in TEST_STRINGS]
    for s, ids in zip(TEST_STRINGS, out["single"]):
        assert tok(s, truncation=True)["input_ids"] == ids or len(ids) > tok.model_max_length
    out["single_truncated"] = [tok(s, truncation=True)["input_ids"] for s in TEST_STRINGS]
    long_text = "".join(TEST_STRINGS) * 40
    long_text = long_text[:20000]
    assert len(long_text) == 20000
    out["long_text"] = long_text
    lt = tok(long_text, truncation=True)
    out["long_truncated"] = lt["input_ids"]
    batch = TEST_STRINGS[:8] + ["", "   ", "<mask>"]
    out["batch_strings"] = batch
    b = tok(batch, padding="longest", truncation=True)
    out["batch_longest"] = {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}
    b = tok(batch, padding="max_length", truncation=True, max_length=24)
    out["batch_max_length_24"] = {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}
    b = tok(TEST_STRINGS, padding="longest", truncation=True, max_length=10)
    out["all_truncate_10"] = {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}
    return out


def legacy_json(doc):
    """Rewrites a v5 tokenizer.json into the layout of older hub files (e.g. xlm-roberta-large's)."""
    doc["normalizer"] = {
        "type": "Sequence",
        "normalizers": [doc["normalizer"], {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}],
    }
    doc["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "add_prefix_space": True}
    doc["decoder"] = {"type": "Metaspace", "replacement": "\u2581", "add_prefix_space": True}


def main():
    TEST_STRINGS.extend(random_strings())
    if os.path.isdir(ROOT):
        shutil.rmtree(ROOT)
    sp_dir = os.path.join(ROOT, "sp_only")
    json_dir = os.path.join(ROOT, "with_json")
    short_dir = os.path.join(ROOT, "short")
    for d in (sp_dir, json_dir, short_dir):
        os.makedirs(d)

    sp_path = os.path.join(sp_dir, "sentencepiece.bpe.model")
    train_spm(sp_path)
    with open(os.path.join(sp_dir, "tokenizer_config.json"), "w") as f:
        json.dump(tokenizer_config(512), f, indent=2)
    with open(os.path.join(short_dir, "tokenizer_config.json"), "w") as f:
        json.dump(tokenizer_config(32), f, indent=2)

    tok_sp = XLMRobertaTokenizer.from_pretrained(sp_dir)
    with tempfile.TemporaryDirectory() as tmp:
        tok_sp.save_pretrained(tmp)
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            p = os.path.join(tmp, name)
            if os.path.exists(p):
                shutil.copy(p, os.path.join(json_dir, name))
    tok_json = XLMRobertaTokenizer.from_pretrained(json_dir)
    assert not os.path.exists(os.path.join(json_dir, "sentencepiece.bpe.model"))

    # A hub-style (older converter) tokenizer.json: Precompiled + Replace(" {2,}", " ") normalizer and a lone
    # Metaspace pre-tokenizer. transformers v5 rebuilds XLMRobertaTokenizer from its vocab and charsmap, so it
    # must encode exactly like with_json/ (tests/tokenizer.rs builds the same file and checks this too).
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(os.path.join(json_dir, "tokenizer_config.json"), tmp)
        with open(os.path.join(json_dir, "tokenizer.json")) as f:
            legacy = json.load(f)
        legacy_json(legacy)
        with open(os.path.join(tmp, "tokenizer.json"), "w") as f:
            json.dump(legacy, f)
        tok_legacy = XLMRobertaTokenizer.from_pretrained(tmp)
        assert [tok_legacy(s)["input_ids"] for s in TEST_STRINGS] == [tok_json(s)["input_ids"] for s in TEST_STRINGS]
        as_is = Tokenizer.from_file(os.path.join(tmp, "tokenizer.json"))
        n_diff = sum(as_is.encode(s).ids != tok_json(s)["input_ids"] for s in TEST_STRINGS)
        print(f"legacy tokenizer.json used as-is differs from XLMRobertaTokenizer on {n_diff} strings")

    sp = spm.SentencePieceProcessor(model_file=sp_path)
    expected = {
        "vocab_size": len(tok_sp),
        "sp_piece_size": sp.get_piece_size(),
        "strings": TEST_STRINGS,
    }
    for name, tok in (("sp_only", tok_sp), ("with_json", tok_json)):
        expected[name] = encode_all(tok)
    assert expected["sp_only"] == expected["with_json"], "sp_only and with_json disagree in transformers"

    short_sp = XLMRobertaTokenizer.from_pretrained(sp_dir, model_max_length=32)
    short_json = XLMRobertaTokenizer(tokenizer_file=os.path.join(json_dir, "tokenizer.json"), model_max_length=32)
    assert short_sp.model_max_length == 32
    e_short = encode_all(short_sp)
    assert e_short == encode_all(short_json)
    expected["short"] = e_short

    # Cross-check against sentencepiece itself (fairseq offset) where XLM-R and spm agree: plain texts.
    agree = 0
    for s, ids in zip(TEST_STRINGS, expected["sp_only"]["single"]):
        sp_ids = [i + 1 if i >= 3 else {0: 3, 1: 0, 2: 2}[i] for i in sp.encode(s)]
        agree += [0] + sp_ids + [2] == ids
    expected["spm_agreement"] = agree
    print(f"sentencepiece agrees with XLMRobertaTokenizer on {agree}/{len(TEST_STRINGS)} strings")

    # Drop the long text duplicates from the expected file (it is rebuilt from `strings` in the tests).
    for key in ("sp_only", "with_json", "short"):
        expected[key].pop("long_text")
    with open(os.path.join(ROOT, "expected.json"), "w") as f:
        json.dump(expected, f, ensure_ascii=False, separators=(",", ":"))
    total = 0
    for dp, _, fs in os.walk(ROOT):
        for fn in fs:
            total += os.path.getsize(os.path.join(dp, fn))
    print(f"vocab size {len(tok_sp)}, fixtures total {total} bytes")


if __name__ == "__main__":
    main()
