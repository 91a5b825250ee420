"""Writes tests/data/tokenizer_corpus.txt and tests/data/cased_vocab.txt.

Run from the repository root: ``python tests/data/make_tokenizer_corpus.py``
(add ``--vocab`` to retrain the vocab too). The outputs are committed. The
corpus is seeded, so rerunning gives the same file; the cased vocab comes from
the ``tokenizers`` WordPiece trainer, whose tie-breaking is not deterministic,
so retraining gives a slightly different (equally usable) vocab.

Corpus format: one sample per line, UTF-8. Characters that would break
line-based reading or are invisible (controls, format characters, line and
paragraph separators, non-ASCII spaces, private use, U+FFFD) and a trailing space are
written as ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN`` escapes; a literal
backslash is written ``\\\\``. ``read_corpus`` decodes them.
"""

import random
import re
import sys
import unicodedata
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "tokenizer_corpus.txt"
CASED_VOCAB = HERE / "cased_vocab.txt"

_ESCAPE_RE = re.compile(r"\\(\\|x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8})")


def _unescape(match):
    body = match.group(1)
    return "\\" if body == "\\" else chr(int(body[1:], 16))


def read_corpus(path=CORPUS):
    """Returns the decoded corpus lines."""
    with open(path, encoding="utf-8", newline="\n") as f:
        return [_ESCAPE_RE.sub(_unescape, line) for line in f.read().split("\n")[:-1]]


def _escape_char(ch):
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape_line(line):
    """Escapes one sample so that it stays on one visible line."""
    out = []
    for i, ch in enumerate(line):
        category = unicodedata.category(ch)
        if ch == "\\":
            out.append("\\\\")
        elif (category[0] in "CZ" and ch != " ") or ch == "\ufffd":
            out.append(_escape_char(ch))
        elif ch == " " and line[i:].strip(" ") == "":
            out.append(_escape_char(ch))
        else:
            out.append(ch)
    return "".join(out)


ZH = [
    "今天天气很好，我们一起去公园散步吧。",
    "自然语言处理是人工智能的一个重要方向。",
    "北京是中华人民共和国的首都。",
    "他说：“明天见！”然后就走了。",
    "这本书的名字叫《百年孤独》，作者是马尔克斯。",
    "「你好」、『再见』和【注意】都是常见的标点。",
    "我爱吃苹果、香蕉、橘子和葡萄。",
    "深度学习模型需要大量的训练数据……",
    "请问，去火车站怎么走？",
    "这个问题太难了！我想了三天三夜。",
    "长江是中国最长的河流，全长约六千三百公里。",
    "机器翻译的质量近年来有了很大的提高。",
    "春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。",
    "床前明月光，疑是地上霜。",
    "中文分词是一个经典的任务——但BERT直接按字切分。",
    "价格是３９９元，打八折后是３１９．２元。",
    "会议定于2024年5月17日上午9点召开。",
    "请把文件发送到我的邮箱，谢谢～",
    "《红楼梦》《西游记》《水浒传》《三国演义》是四大名著。",
    "小明问：“为什么天空是蓝色的？”",
    "繁體中文與簡體中文的差異在於字形。",
    "臺灣、香港和澳門使用繁體字。",
    "龍飛鳳舞，氣象萬千。",
    "我們的團隊正在開發新的產品。",
    "程序员的日常：写代码、调试、再写代码。",
    "这是一个测试句子，用来检查分词器的行为是否正确。",
    "Python和Keras都是很流行的工具。",
    "他的iPhone15用了三年还很流畅。",
    "数据集包含10000条样本，其中20%用于测试。",
    "〈注〉本文仅代表作者个人观点。",
    "〔一〕总则〔二〕分则",
    "・中点・和·间隔号·不同",
    "她笑着说〜真是太好了〜",
    "一二三四五六七八九十百千万亿",
    "𠀀𠀁𠀂是扩展B区的汉字。",
    "豈更車賈滑是兼容汉字。",
    "鿿和㐀是边界上的汉字。",
    "〇是一个特殊的数字字符。",
    "⺀⼀⿕是部首相关的字符。",
    "全角空格在这里\u3000分隔两个词。",
]

EN = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, World! How are you doing today?",
    "I can't believe it's already 2024; time flies.",
    'She said, "Don\'t worry about it," and smiled.',
    "Machine learning models aren't magic - they're statistics.",
    "Tokenization splits text into word-pieces like un##affable.",
    "The U.S.A. and the U.K. signed the agreement on Jan. 1st.",
    "Prices rose 3.5% in Q3, reaching $1,234.56 per unit.",
    "E-mail me at john.doe+test@example.com or call +1 (555) 010-9999.",
    "Visit https://www.example.com/path/to/page?query=value&x=1#section now.",
    "THE QUICK BROWN FOX IS SHOUTING IN ALL CAPS!!!",
    "CamelCaseWordsAndsnake_case_words and kebab-case-words.",
    "Well... I guess so?! (Maybe not.) [Citation needed] {braces}",
    "The year 1984 was a novel; 2001 was a film.",
    "Rock 'n' roll isn't dead, y'all.",
    "C++ and C# are languages; so is F#.",
    "Use the ~/.bashrc file, not /etc/profile.",
    "Temperature: -40 degrees equals -40 degrees.",
    "He scored 99/100 on the test & got an A+.",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z",
    "Antidisestablishmentarianism is a very long word.",
    "Supercalifragilisticexpialidocious!",
    "The model's accuracy was 0.987 +/- 0.002.",
    "Email subject: RE: FW: [URGENT] Meeting @ 3pm",
    "Windows paths look like C:\\Users\\Alice\\Documents\\file.txt.",
    "Markdown uses *stars*, _underscores_ and `backticks`.",
    'HTML: <div class="main">Hello &amp; welcome</div>',
    'JSON: {"key": [1, 2, 3], "nested": {"a": null}}',
    "SELECT * FROM users WHERE id = 42;",
    "x = f(y) ^ 2 | z & ~w % 7",
    "The 3rd, 22nd and 101st entries were duplicated.",
    "Mr. O'Neill met Dr. McDonald at St. Mary's.",
    "co-operate, re-enter, pre-trained, state-of-the-art",
    "Is it 10:30 a.m. or p.m.?",
    "We'll, they'd, you've, I'm, she's, it'll.",
    "OK",
    "tokenizers",
    "unbelievably uncharacteristically",
    "BERT, RoBERTa, ALBERT, ELECTRA and DeBERTa.",
    "Keras 3 runs on JAX, PyTorch and TensorFlow.",
]

ACCENTED = [
    "café",
    "naïve",
    "Ångström",
    "Straße",
    "résumé",
    "façade",
    "jalapeño",
    "Zürich",
    "São Paulo",
    "Dvořák",
    "Łódź",
    "Zażółć gęślą jaźń",
    "Øresund",
    "Æsir",
    "Œuvre",
    "İstanbul",
    "ılık",
    "Tiếng Việt có dấu",
    "crème brûlée",
    "piñata",
    "Mötley Crüe",
    "Fußgängerübergänge",
    "ΟΔΥΣΣΕΥΣ",
    "Σοφία",
    "e\u0301cole",
    "A\u030angstro\u0308m",
    "\u212bngstr\u00f6m",
    "\u2126hm",
    "\u212aelvin",
    "ﬁnancial ﬂow",
    "ǄUNGLA",
    "ẞ",
    "Ǉubljana",
    "ŉ",
    "ΐ",
]

EMOJI = [
    "😀",
    "🥰",
    "🫠",
    "👍",
    "👍🏿",
    "👨\u200d👩\u200d👧\u200d👦",
    "🏳️\u200d🌈",
    "👩🏽\u200d💻",
    "🇨🇳",
    "🇺🇸",
    "🇯🇵🇰🇷",
    "1️⃣",
    "#️⃣",
    "❤️",
    "☺",
    "🐍",
    "🤖",
    "🎉🎉🎉",
    "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",
]

CONTROLS = [
    "\x00",
    "\x07",
    "\x1b",
    "\x7f",
    "\x0b",
    "\x0c",
    "\x85",
    "\u200b",
    "\u200c",
    "\u200d",
    "\u200e",
    "\u200f",
    "\ufeff",
    "\xad",
    "\ufffd",
    "\t",
    "\r",
    "\r\t",
    "\u2028",
    "\u2029",
    "\ue000",
    "\U000f0001",
    "\u2060",
    "\u2066",
    "\u0890",
]

SPACES = [" ", "  ", "\u3000", "\xa0", "\u2009", "\u202f", "\u2003", "\u1680", "\t", " \t "]

FULLWIDTH = [
    "ＡＢＣ",
    "ｈｅｌｌｏ",
    "ＨｅＬＬｏ",
    "１２３４５",
    "！？，．：；",
    "（全角括号）",
    "［方括号］",
    "＂引号＂",
    "＠＃＄％＆＊",
    "ｶﾀｶﾅ",
    "ﾊﾟﾋﾟﾌﾟ",
    "～",
    "￥１００",
]

CJK_PUNCT = [
    "「",
    "」",
    "《",
    "》",
    "、",
    "。",
    "【",
    "】",
    "『",
    "』",
    "〈",
    "〉",
    "…",
    "—",
    "·",
    "〜",
]

NUMBERS = [
    "3.14159",
    "1,000,000",
    "2024-05-17",
    "50%",
    "$19.99",
    "1e-5",
    "0x1F600",
    "½",
    "²",
    "Ⅻ",
    "①②③",
    "٣٤٥",
    "१२३",
    "-273.15°C",
    "10^9",
    "№7",
]

URLS = [
    "https://example.com/path?q=1&lang=zh-CN#frag",
    "http://localhost:8080/api/v1/items/42",
    "user@example.org",
    "ftp://ftp.example.net/pub/file.tar.gz",
    "www.kerasformers.dev",
    "https://zh.wikipedia.org/wiki/北京",
    "mailto:someone@example.com?subject=Hi%20there",
]

SCRIPTS = [
    "日本語のテキストです。",
    "ひらがなとカタカナ",
    "がぎぐげご ぱぴぷぺぽ",
    "東京スカイツリーに行きました！",
    "안녕하세요 세계",
    "한국어 문장입니다.",
    "مرحبا بالعالم",
    "اللُّغَةُ العَرَبِيَّةُ",
    "Привет, мир! ЁЖИК в тумане.",
    "Ελληνικά: ΟΔΟΣ, Σίσυφος, ΣΑΣ.",
    "שָׁלוֹם עוֹלָם",
    "สวัสดีครับ ภาษาไทย",
    "नमस्ते दुनिया",
    "ᠮᠣᠩᠭᠣᠯ",
    "བོད་ཡིག",
    "ሰላም ዓለም",
    "Ꭰ Ꭱ Ꭲ",
    "∑∫√≈≠∞",
    "→⇒←↔",
    "■□▲△●○",
    "€£¥₩₹₿",
    "♠♣♥♦",
    "§¶†‡",
    "«guillemets» ‹single›",
    "„Anführungszeichen“",
    "¿Qué pasa? ¡Nada!",
    "\U0002b820\U0002b900\U0002b920",
    "𪜀𫝀",
    "⺀⼀",
    "ᄀᄁᄂ",
]


def _overlong_words():
    return [
        "a" * 100,
        "a" * 101,
        "x" * 99 + "y",
        ("ab" * 50) + "c",
        "pneumonoultramicroscopicsilicovolcanoconiosis" * 3,
        "é" * 100,
        "é" * 101,
        "한" * 40,
        "Ω" * 100,
        "A" * 100,
        "supercalifragilistic" * 5,
        "z" * 250,
    ]


def build_corpus(seed=20240517):
    """Returns the corpus lines (decoded)."""
    rng = random.Random(seed)
    lines = []
    lines += ZH + EN
    lines += [" ".join(ACCENTED[i : i + 5]) for i in range(0, len(ACCENTED), 5)]
    lines += ["text " + e + " more" + e for e in EMOJI]
    lines += ["a" + c + "b c" + c + " d" for c in CONTROLS]
    lines += ["left" + s + "right" + s + "中" + s + "文" for s in SPACES]
    lines += ["ＡＢＣ" + f + "abc" for f in FULLWIDTH]
    lines += ["标点" + p + "测试" + p for p in CJK_PUNCT]
    lines += ["numbers: " + n for n in NUMBERS]
    lines += ["see " + u + " for details" for u in URLS]
    lines += SCRIPTS
    lines += ["word " + w + " end" for w in _overlong_words()]
    lines += ["", " ", "\t", "\u3000\u3000", "\x00\x07", "。", "a", "中"]

    pools = [ZH, EN, ACCENTED, EMOJI, CONTROLS, FULLWIDTH, CJK_PUNCT, NUMBERS, URLS, SCRIPTS]
    separators = ["", " ", " ", " ", "\t", "\u3000", "\xa0", ", ", "。", "\u200b"]
    while len(lines) < 480:
        parts = []
        for _ in range(rng.randint(2, 6)):
            pool = rng.choice(pools)
            part = rng.choice(pool)
            style = rng.random()
            if style < 0.15:
                part = part.upper()
            elif style < 0.25:
                part = part.title()
            parts.append(part)
            parts.append(rng.choice(separators))
        lines.append("".join(parts).replace("\n", " "))
    return lines


def write_corpus(lines, path=CORPUS):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(escape_line(line) + "\n")


def train_cased_vocab(lines, path=CASED_VOCAB):
    """Trains a small cased WordPiece vocab; rare characters stay out of it."""
    from tokenizers import BertWordPieceTokenizer

    tokenizer = BertWordPieceTokenizer(lowercase=False, strip_accents=False)
    tokenizer.train_from_iterator(
        lines + EN * 3 + ZH * 2, vocab_size=1500, min_frequency=2, limit_alphabet=400
    )
    vocab = tokenizer.get_vocab()
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for token, _ in sorted(vocab.items(), key=lambda item: item[1]):
            f.write(token + "\n")


if __name__ == "__main__":
    corpus = build_corpus()
    write_corpus(corpus)
    assert read_corpus() == corpus
    print(f"{len(corpus)} lines -> {CORPUS}")
    if "--vocab" in sys.argv:
        train_cased_vocab(corpus)
        print(f"cased vocab -> {CASED_VOCAB}")
