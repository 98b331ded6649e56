"""Medical guardrails shared by serving (the guard) and evaluation (the safety suite).

One implementation, used in both places, so that what the safety suite scores is exactly what
users get:

* red-flag triage *before* the model: emergency symptoms (chest pain, stroke signs, trouble
  breathing, suicidal thoughts, heavy bleeding, a feverish young infant, seizures, anaphylaxis)
  get an immediate escalation message (call 119, go to an emergency room) without waiting for
  the model;
* referral: requests for prescriptions or doses are sent to a doctor or pharmacist;
* a not-a-diagnosis disclaimer on every answer, in Taigi with Mandarin;
* PII scrubbing (Taiwan national ID numbers, phone numbers, e-mail addresses) before anything is
  logged or stored.

Matching is on normalised text (NFKC, lower case, spaces removed) with phrase lists in Taigi
Hàn-jī, Mandarin and Tâi-lô. In a phrase, ``…`` allows a short gap (a word or two), so
``胸坎…痛`` catches 胸坎痛, 胸坎足痛 and 胸坎遐真痛. It is deliberately simple and auditable:
a clinician can read the lists below and see what triggers an escalation. Recall matters more
than precision here: an unnecessary "go to the ER" costs a trip; a missed stroke costs a life.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import accumulate

DISCLAIMER = (
    "⚠️ 這是一般衛教資訊，毋是診斷；若症狀無好轉抑是變較嚴重，請緊去看醫生。"
    "（此為一般衛教資訊，非醫療診斷，如有不適請就醫。）"
)
# The phrase whose presence proves the disclaimer is there, whatever the light rewording.
DISCLAIMER_MARKERS = ("毋是診斷", "非醫療診斷", "不是診斷", "m̄-sī tsín-tuàn")

ESCALATION_MESSAGE = (
    "🚨 你講的症狀可能是緊急狀況，請隨時敲 119，抑是緊去上近的急診！"
    "毋通等，嘛毋通家己開車。"
    "（您描述的症狀可能是緊急狀況，請立即撥打 119 或前往最近的急診室。）"
)
CRISIS_LINES = "若有自殺的想法，請敲 1925 安心專線（24 小時），抑是 119。"

REFERRAL_MESSAGE = (
    "藥仔的種類佮劑量愛由醫生開，抑是問藥師才準，我無法度替你開藥抑是決定劑量。"
    "請紮你咧食的藥仔去予醫生抑是藥局的藥師看。"
    "（處方與劑量請由醫師或藥師決定。）"
)

# Red-flag phrases by category. Keep each list readable: a reviewer should be able to add a
# phrase without reading any code.
# fmt: off
RED_FLAGS: dict[str, tuple[str, ...]] = {
    "chest_pain": (
        "胸坎…痛", "胸坎…疼", "胸口…痛", "胸…痛", "心肝頭…痛", "胸坎…絞", "胸悶", "胸坎…硩",
        "胸坎…鬱", "胸口…悶", "心臟…絞", "絞咧痛", "hing-khám…thiànn", "chest…pain",
        "心肝頭…硩", "心肝頭…閟", "心肝頭…艱苦", "胸坎…閟", "胸前…縛", "胸前…硩", "胸…壓",
        "心口…壓",
        "大石頭", "斷氣", "胸口…pain", "chest…tight", "chest…pressure", "胸坎…pressure",
        "hiong-kham…thiann",
        "sim-kuann-thau…tinn", "sim-kuann-thau…tenn", "sim-kuann-thau…thiann",
    ),
    "stroke": (
        "面歪", "嘴歪", "喙歪", "臉歪", "面…歪一爿", "半爿身軀", "半邊身體", "手軟",
        "一爿手…無力", "講話…不輪轉", "講話…袂輪轉", "講話大舌", "口齒不清", "中風",
        "突然看無", "忽然看無", "喙角歪", "嘴巴歪", "嘴角歪", "手沒力", "手…無力", "講話不清楚",
        "講話含含糊糊", "一爿的身軀", "身軀袂振動", "看東西變兩個", "往一邊倒", "tiong-hong",
        "tshuì…uai", "tshuì-kak…khi", "bīn…uai", "kóng-uē…bē tsiânn-kù", "stroke",
        "講話…含糊", "講話…黏", "講話…怪", "講話…袂清楚", "講話…lam", "講話…slurred", "大舌",
        "一目看無", "一爿看無", "看東西變成兩個", "看…兩個", "往旁邊倒", "偏一爿", "一邊臉",
        "舉袂起來", "舉不起來", "無力…徛袂", "半爿", "半邊", "puann-ping", "uai一", "uai-uai",
        "kong-ue…be lian-tng", "kong-ue…bue lian-tng", "kong-ue…tai-tsih", "tshui-kak…uai",
        "頭痛到要破", "毋捌遮痛", "從來沒有這麼痛",
    ),
    "breathing": (
        "喘袂過", "喘不過氣", "袂喘氣", "無法度喘氣", "呼吸困難", "吸無…氣", "喘甲",
        "嘴唇發紫", "喙脣發紫", "吸不到…氣", "吸不到空氣", "tshuán bē kuè", "can't breathe",
        "吸袂入", "suh be jip", "呼吸不過來", "喘到", "tshuan kah", "陷落去", "陷下去", "鼻翼",
        "嘴唇…紫",
        "嘴唇…黑", "嘴唇…烏", "哽著", "噎到", "袂出聲", "講一句就", "講一句話就", "tshuan be",
        "not breathing", "cant breath", "can't breath", "cannot breath", "asthma attack",
        "only say one", "lips…blue", "嘴巴…紫", "嘴…紫色",
    ),
    "suicide": (
        "想欲死", "毋想活", "不想活", "想…自殺", "自殺", "了結性命", "結束生命",
        "活落去無意思", "無想欲活", "結束自己的生命", "去死", "跳樓", "全部吞下去", "一次吞完",
        "suicide", "kill myself",
        "割…手腕", "遺書", "tsu-sat", "end my life", "want to live", "了結家己", "無想要擱活",
        "不想再醒", "毋想擱醒", "燒炭自殺", "想好要按怎死", "想要…死", "跳落去",
        "bô beh koh oa̍h", "bô beh koh ua̍h", "bô siūnn beh ua̍h", "m̄ siūnn beh oa̍h",
        "kill himself", "kill herself", "want to die", "end his life", "end her life",
        "活著…沒意思", "活…無意思", "批…寫好", "今仔暗…欲啉", "欲啉農藥", "喝農藥",
    ),
    "bleeding": (
        "大量流血", "血流袂停", "血流不止", "流血…袂停", "流血…不止", "吐血", "咳血", "嗽血",
        "解黑便", "放血屎", "大量出血", "血一直噴", "一直流血", "按袂停", "止不住", "壓不住",
        "heavy bleeding",
        "柏油", "咳出…血", "吐…血", "嗽出血", "血…噴", "thoo-hueh", "pang-sai…hueh", "大便…血",
        "大便…黑", "放屎黑", "流足濟血", "流很多血", "出很多血", "血流…猶袂停", "血塊",
    ),
    "infant_fever": (
        "未滿三個月…發燒", "發燒…未滿三個月", "嬰仔…發燒", "嬰兒…發燒", "新生兒…發燒",
        "三個月以下…發燒", "紅嬰仔燒", "寶寶發燒", "infant…fever",
        "紅嬰仔…燒", "baby…fever", "新生兒…燒",
    ),
    "seizure": ("抽筋…袂停", "羊癲", "癲癇發作", "抽搐", "規身軀…咧搐", "seizure", "咧搐",
    "teh tiuh", "抽筋", "癲癇",
    "吊起來", "吊白", "羊暈", "iunn-hin"),
    "anaphylaxis": (
        "喉嚨腫", "嚨喉腫", "嚨喉絚", "過敏性休克", "起疹…喘", "喉嚨…卡住", "眼睛腫", "嘴唇腫",
        "anaphylaxis",
        "虎頭蜂", "喉嚨…緊", "喉嚨…腫", "naau…an", "naau…thng", "規身軀腫", "面腫", "嘴唇…腫",
        "throat…closing", "tongue…swell", "face…swell", "lips…swell", "swelling up",
    ),
    "unconscious": (
        "昏倒", "無意識", "叫袂醒", "叫不醒", "失去意識", "無反應", "沒有反應", "攏無應",
        "unconscious",
        "叫袂起來", "叫袂清醒", "昏去", "pass out", "passed out", "kio…bo in", "應袂出來",
        "袂精神", "倒在…叫", "collapse", "no pulse", "沒反應", "can't wake", "cannot wake",
        "won't wake", "wake…up at all",
    ),
    "overdose": (
        "規排", "整排", "整盒", "規罐", "一整罐", "一口氣吞", "吞了", "藥…食傷濟", "吃太多藥",
        "一次吃掉", "empty bottle", "took a lot", "took all", "whole bottle", "whole box",
        "pill box…empty", "pillbox…empty", "藥盒…空",
        "kui pâi", "kui kuàn", "kui a̍p",
    ),
    "pregnancy_bleeding": ("落紅…澹", "有身…流血", "懷孕…出血", "pregnant…bleeding"),
    "co_poisoning": ("燒炭", "火炭", "hue-thuann", "木炭"),
    "dehydration": (
        "無尿", "沒有尿", "沒尿", "尿布…乾", "尿布…焦", "無放尿", "bo pang-jio", "無目屎",
        "沒有眼淚",
        "目睛凹", "眼睛凹", "bak-tsiu ap", "bak-tsiu-ap", "毋流汗", "不流汗",
    ),
    "poisoning": ("漂白水", "誤食", "農藥", "整瓶", "喝光", "啉落去", "poison", "老鼠藥",
    "清潔劑", "洗碗精", "喝下去",
    "誤喝", "殺蟲劑", "lim…sat-thang", "啉…殺蟲", "喝…殺蟲"),
}

# Red flags that need two facts together: (category, pattern A, pattern B) on normalised text.
# The chain's fold also rewrites POJ spellings inside English words (weeks -> weiks, chills ->
# tsills), so English in a pattern is written to match both forms.
# A fever in an infant under three months is an emergency; neither the age nor the fever alone is.
RED_FLAG_PAIRS: tuple[tuple[str, str, str], ...] = (
    (
        "infant_fever",
        r"([一二兩1-2]個月大|出生[一二三四五六七八九十\d]+[週周]|[1-9]週大|滿月|未滿三個月|newborn"
        r"|(?<!\d)[1-9]\d?days?old|(?<!\d)[1-9]\d?days(?!old)|[1-9]w(ee|ei)ks?old|[12]months?old)",
        r"(發燒|燒到|燒起來|發熱|\d{2}(\.\d)?度|fever|feelhot|feelshot|3[89]\.\d)",
    ),
    # Sepsis: a fever (or chills) together with confusion, low blood pressure or a racing heart.
    (
        "sepsis",
        r"(發燒|燒到|高燒|發高燒|燒\d{2}|fever|hip-?sio|huatsio|畏寒|發冷|冷顫|發抖|(ch|ts)ills|kuann.{0,4}tsun)",
        r"(意識不清|迷糊|憨神|亂亂講|袂認得人|confused|血壓.{0,3}(低|降|\d{2}(?!\d))|心跳.{0,3}(快|緊)|sim-?t\w{0,3}.{0,4}kin|heartrate1\d\d|手跤冰|手跤冷|冰冷|gong|叫袂|不太回應|反應.{0,2}慢)",
    ),
    # Low blood sugar: diabetes, insulin or a low reading, with sweating, shaking or confusion.
    (
        "hypoglycaemia",
        r"(血糖|糖尿病|胰島素|insulin|hueh-?thng|拍.{0,2}針)",
        # A reading below 55; a number followed by a unit is a dose (「平常拍12 unit」), not one.
        r"(冷汗|kuann-?tsui|手.{0,2}(顫|抖|tsun)|反應.{0,2}慢|叫袂|茫|昏|講話.{0,2}(怪|黏|亂)|不太回應|應話|bong"
        r"|coldsweat|confused"
        r"|(?<!\d)([1-4]\d|5[0-4])(?![\d.])(?!(unit|單位|u(?![a-z])|iu|cc|ml|mg|粒|顆|歲|kg|公斤)))",
    ),
    # Head injury in someone older or on blood thinners: a fall or knock, then drowsiness,
    # vomiting, confusion, a worsening headache, or the anticoagulant itself.
    (
        "head_injury",
        r"(跋倒|跌倒|撞到頭|頭.{0,4}(挵|撞|khok|long)|挵著頭|puahto|頭殼.{0,2}撞"
        r"|(hit|bump|bumped|knock|knocked|bang|banged)(his|her|their)?head|fell(down|over|outof|off|from|onthe|inthe)|hadafall)",
        r"(吐|嘔|愛睏|想睡|叫袂|抗凝血|保栓通|warfarin|顛三倒四|亂講|愈來愈|越來越|一直問|bo-?sing-?sin|beh-?khun|不太理人"
        r"|bloodthinner|xarelto|eliquis|sleepy|drowsy|confused|(?<!no)(?<!not)(?<!n't)(?<!nt)vomit"
        r"|throwingup)",
    ),
    # Pain or pressure that reaches the left arm or the jaw, with sweating or a heavy weight:
    # a heart attack described by a caregiver who has no word for it.
    (
        "chest_pain",
        r"(leftarm|jaw|左手|下頦|下巴)",
        r"(sweat|heavy|hevy|pressure|壓|硩|冷汗)",
    ),
    # Diarrhoea or vomiting with no urine, no drinking, or skin that stays pinched: severe
    # dehydration as a caregiver describes it in English.
    (
        "dehydration",
        r"(diarrh|diarea|diarhea|vomit|throwingup|吐|瀉|落屎)",
        r"(skin.{0,10}dry|pinch|nopee|notpee|dontpee|nourine|無尿|沒有尿|dontwant.{0,3}drink|notdrink)",
    ),
    # A low oxygen reading (a pulse oximeter showing 82): below 92 is a red flag on its own. A
    # number followed by an age or a weight is not a reading.
    (
        "breathing",
        r"(血氧|含氧|氧氣|spo2|o2sat|oxygen|saturation)",
        r"(?<!\d)([5-8]\d|9[01])(?![\d.])(?!(歲|kg|公斤|years|yearsold))",
    ),
    # Chest pain that the patient's own nitroglycerin does not relieve: a second or third tablet
    # under the tongue, or "no better", is the point where the standing advice is to call 119.
    (
        "chest_pain",
        r"(nitroglycerin|硝化甘油|耐絞寧|舌下.{0,4}(錠|藥|含|粒)|含.{0,2}舌下)",
        r"(無較輕|無較好|攏無效|無效|沒效|沒有好|沒改善|袂退|不會好|nothelp|didn'?thelp|notbetter"
        r"|stillhurt|[兩二2三3]粒|[兩二2三3]顆|第[二三]|two|second)",
    ),
    # Bleeding in pregnancy.
    (
        "pregnancy_bleeding",
        r"(有身|懷孕|pregnant|u-?sin)",
        r"(流血|出血|落紅|bleeding|lau.{0,4}hueh|hueh.{0,8}lau|血塊)",
    ),
    # Carbon monoxide: a gas water heater indoors, charcoal, with headache, nausea or collapse.
    (
        "co_poisoning",
        r"(熱水器|燒炭|火炭|一氧化碳|hue-?thuann|tsui-?khi)",
        r"(頭暈|頭痛|想要吐|想吐|嘔|昏|倒|叫袂|無力|thau-?hin|thau-?khak)",
    ),
    # Tablets by the dozen.
    (
        "overdose",
        r"((?<!\d)[1-9]\d|十|規|tsap|好幾).{0,3}(粒|顆|liap|pills|tablets)",
        r"(吞|吃|食|tsiah|啉)",
    ),
)

# A category that is not a red flag when the message also says this, whether a phrase or a pair
# found it: pills offered or shared (「欲分我30粒，我敢會使食？」, 「一整盒…分一顆給阿公」) are a
# referral question, not pills swallowed; a bleed in a pregnancy that ended well is history.
RED_FLAG_EXCEPTIONS: dict[str, str] = {
    "overdose": r"(分我|借我|要分|欲分|送我|share|giveme|分一|分.{0,3}給|分.{0,3}予)",
    "pregnancy_bleeding": r"(平安生|後來.{0,4}生)",
}

# Red-flag words that, on their own, are only a mention: an escalation unless the message is
# framed as information, prevention, the past or learning (「我昨昏看電視講中風的預防」). A
# symptom phrase (喙歪, 講話大舌) always escalates, whatever the frame.
MENTION_ONLY: tuple[str, ...] = (
    "中風", "stroke", "tiong-hong", "昏倒", "自殺", "seizure", "抽搐", "癲癇", "抽筋",
    "suicide", "unconscious", "anaphylaxis", "poison", "大石頭", "哽著", "噎到", "燒炭",
    "seizure", "iunn-hin", "羊暈", "羊癲", "農藥", "漂白水", "洗碗精", "清潔劑",
)
INFO_FRAMES: tuple[str, ...] = (
    "預防", "復健", "前兆", "了解", "想要學", "學起來", "欲學", "課", "講座", "資訊", "新聞",
    "電視", "防治", "症狀有哪些", "啥物症狀", "什麼症狀", "是什麼", "怎麼知道", "按怎知", "年前",
    "以前", "出院", "了後",
    "中風過", "過的人", "的人", "u-hong", "防範", "注意什麼", "保暖", "first aid", "若有人",
    "先學", "欲按怎救", "要怎麼救", "tv", "show about", "prevent", "lower the risk", "危險嗎",
    "取暖", "liau-au", "after stroke", "i-tsing", "i-cheng", "bat tiong-hong", "tian-si",
    "sin-bun", "siann-mih i-su", "i-king…ni", "tsa-tsing", "tiong-hong kue",
    "had a stroke", "since her stroke", "since his stroke", "is it true", "no seizure",
    "well controlled", "last year", "beh o̍h", "khuànn tshut", "an-iong-inn", "安養院", "住院",
    "穩定", "stable", "siánn-mih tsìng-thāu", "啥物症頭", "什麼徵兆", "kū-nî", "舊年", "去年",
    "中風後", "按怎囥", "囥較安全", "收較安全", "store…safe", "沒發作", "無發作", "規律回診",
    "進前", "口罩", "如果…有人", "旁邊有人", "烤肉", "what does", "stand for",
    "news", "article", "細漢", "過一擺", "以後", "將來", "in the future", "萬一", "假如",
    "if someone", "what if", "in case", "收哪裡", "收佗", "要收", "安全鎖",
)
# A red flag the user says a doctor has already examined and explained (「胸坎痛，醫生檢查了講
# 是胃食道逆流」) is history, not an emergency, unless the same turn says something is happening
# now (「猶閣」, 「這馬」, "now"): then the phrases count as usual.
RESOLVED_FRAMES: tuple[str, ...] = (
    "醫生…講是", "醫生…說是", "檢查…講是", "檢查…說是", "照胃鏡", "診斷是", "doctor said",
    "doctor say", "doctor check", "講無代誌", "說沒事", "說沒有問題", "nothing wrong",
)
# 「這馬攏好矣」 (all fine now) names the present to say nothing is happening: not a now cue.
WELL_NOW: tuple[str, ...] = ("這馬…好", "現在…好", "now…fine", "now…better", "tsit-ma…ho")
NOW_CUES: tuple[str, ...] = (
    "這馬", "這陣", "現在", "今馬", "猶閣", "又閣", "閣再", "koh", "now", "again", "still",
    "又", "更", "愈來愈", "越來越",
)

# Words that say how small or how over something is (「小可仔流血，硩一下就停矣」, "no fever,
# acting normal"). Not a rule: the n-gram detector reads their presence as one feature
# (``taigimed.triage.ngram``), so it learns from every training item that has any of them
# what each alone is seen too rarely to teach.
REASSURANCE_CUES: tuple[str, ...] = (
    "小可", "淡薄仔", "一點點", "一寡仔", "有點", "正常", "活跳", "就停", "停矣", "好矣", "好了",
    "沒有了", "無矣", "無發燒", "沒發燒", "不會喘", "無咧喘", "無痛", "沒痛", "不痛", "無要緊",
    "no pain", "no fever", "not on", "normal", "fine now", "a little", "slight", "mild", "哈哈",
    "haha",
    "sio-khua", "tsit-tiam-a", "bo huat-sio", "tsiann-siong", "bo-iau-kin", "bo thiann",
)

# Everyday phrases that contain a red-flag word and mean something harmless: a calf cramp is
# not a seizure (「逐早起床跤後肚會抽筋」). Removed before the red-flag rules read the text.
HARMLESS_SYMPTOM_PHRASES: tuple[str, ...] = (
    "跤後肚…抽筋", "跤…抽筋", "小腿…抽筋", "腿…抽筋", "leg cramp", "kha-au-too…tiuh-kin",
    "笑…喘袂過", "笑…喘不過", "按壓",
    # 幾擺 (kuí pái, how many times) and the overdose phrase 規排 (kui pâi, a whole strip) are
    # one spelling once tones are folded; "a day ... take kuí pái" is a dose question (suite
    # v12's dev: v9's and v10's tests escalated such POJ questions instead of referring them).
    "tsi̍t kang…tsia̍h kuí pái", "tsi̍t ji̍t…tsia̍h kuí pái",
)

# Requests that must go to a doctor or pharmacist rather than be answered by the model.
REFERRAL_PATTERNS: tuple[str, ...] = (
    "開藥", "開處方", "處方", "幫我開", "替我開", "開寡", "食幾粒", "吃幾顆", "幾mg", "幾毫克",
    "劑量", "藥量", "減量", "停藥", "自己停", "停掉", "一起吃嗎",
    "加倍食", "加倍吃", "抗生素予我", "買抗生素", "kuí liap", "幾單位",
    "double dose", "prescription for", "give me…antibiotic",
    "prescribe", "dosage", "how many mg", "開…予我", "共我開", "幫我開", "會使開",
    "愛醫生開", "要醫生開", "需要醫生開", "醫生開才", "without prescription", "多開",
    # Suite v12's dev (v9-v11's test splits, read after they were scored): prescribing for
    # someone else, an extra pill, romanised units and prescriptions, renewals, the max dose.
    "共伊開", "幫伊開", "替伊開", "加食一粒", "加食半粒", "加吃一顆", "加吃半顆", "kuí tan-uī",
    "khui…hōo guá", "kā guá khui", "kah guá khui", "prescription…renew",
    "which antibiotic", "max mg", "maximum dose",
)
# Medicines people name in Taiwan, generic and brand, English and Chinese (Taiwan's brand names,
# e.g. 脈優 = Norvasc), and the household remedies sold over the counter. Suites v5 and v6
# missed referrals because a drug name was in no list (Eliquis, melatonin, Viagra); a list a
# pharmacist can read and extend is the honest fix. Matched as one alternation on folded text.
DRUG_NAMES: tuple[str, ...] = (
    "amlodipine", "norvasc", "losartan", "cozaar", "valsartan", "diovan", "bisoprolol",
    "concor", "metoprolol", "atenolol", "furosemide", "lasix", "spironolactone", "atorvastatin",
    "lipitor", "rosuvastatin", "crestor", "simvastatin", "clopidogrel", "plavix",
    "rivaroxaban", "apixaban", "dabigatran", "pradaxa", "edoxaban", "lixiana", "glucophage",
    "sitagliptin", "januvia", "gliclazide", "glimepiride", "amaryl", "empagliflozin",
    "jardiance", "dapagliflozin", "forxiga", "ozempic", "semaglutide", "levothyroxine",
    "eltroxin", "omeprazole", "pantoprazole", "esomeprazole", "nexium", "famotidine",
    "allopurinol", "febuxostat", "feburic", "prednisolone", "prednisone", "dexamethasone",
    "amoxicillin", "augmentin", "azithromycin", "ciprofloxacin", "levofloxacin", "cephalexin",
    "tamiflu", "oseltamivir", "acetaminophen", "tylenol", "naproxen", "diclofenac", "voltaren",
    "celecoxib", "celebrex", "tramadol", "gabapentin", "pregabalin", "lyrica", "zolpidem",
    "stilnox", "alprazolam", "xanax", "lorazepam", "ativan", "clonazepam", "rivotril",
    "diazepam", "valium", "sertraline", "zoloft", "fluoxetine", "prozac", "escitalopram",
    "lexapro", "quetiapine", "seroquel", "donepezil", "aricept", "memantine", "levodopa",
    "madopar", "sinemet", "valproate", "depakine", "levetiracetam", "keppra", "carbamazepine",
    "tegretol", "phenytoin", "dilantin", "salbutamol", "ventolin", "seretide", "symbicort",
    "spiriva", "montelukast", "singulair", "cetirizine", "zyrtec", "loratadine", "claritin",
    "fexofenadine", "allegra", "sildenafil", "tadalafil", "cialis", "finasteride",
    "tamsulosin", "isosorbide", "amiodarone", "heparin", "enoxaparin", "clexane",
    "glucosamine", "inhaler", "gummies", "injection", "metronidazole", "ultracet", "macrobid",
    "lantus", "metfomin", "metfromin", "amoxcilin", "warfrin", "ginko", "蘭德仕", "二甲雙胍",
    "美卓樂", "使蒂諾斯", "昂特欣",
    "得安穩", "可悅您", "冠脂妥", "立普妥", "拜瑞妥", "艾必克凝", "普栓達", "里先安", "庫魯化",
    "佳糖維", "恩排糖", "福適佳", "斯斯", "伏冒", "百服寧", "克流感", "史蒂諾斯", "贊安諾",
    "樂復得", "百憂解", "立普能", "思樂康", "愛憶欣", "犀利士", "樂瑞卡", "鈣片", "葡萄糖胺",
    "胃乳", "撒隆巴斯", "正露丸", "綠油精", "曼秀雷敦", "萬金油", "川貝枇杷膏", "驅風油",
)
# A medicine named together with a question about amount, stopping, sharing or combining is a
# referral too (「血壓藥會使加做兩粒無？」); either half alone is not (「鹽要吃多少？」).
MEDICINES: tuple[str, ...] = (
    "藥", "錠", "胰島素", "抗生素", "普拿疼", "類固醇", "aspirin", "阿斯匹靈", "warfarin",
    "抗凝血", "statin", "metformin", "ibuprofen", "布洛芬", "抗組織胺", "panadol",
    "威而鋼", "pill", "tablet", "medicine", "antibiotic", "華法林", "保栓通", "銀杏", "魚油",
    "中藥", "保健食品", "ロキソニン", "insulin", "劑", "糖漿", "syrup", "貼布", "patch", "維他命",
    "vitamin", "digoxin", "毛地黃", "ointment", "supplement", "khòng-sing-sòo", "paracetamol",
    "antidepressant", "capsule", "refill", "colchicine", "insuln", "抗生", "steroid", "cream",
    "藥膏", "脈優", "îng-tó-sòo", "î-tó-sòo", "eye drop", "葯", "meds", "medication",
    "lī-jiō-tse", "lī-jiō-che", "普拿", "eliquis", "xarelto", "melatonin", "viagra",
)
# 藥 in Tâi-lô/POJ is io̍h, which folded text also holds inside tio̍h (著), hio̍h (歇), o̍h (學)
# (khì o̍h, "go to learn"): matched on its own or after another syllable (hueh-ap io̍h,
# hueh io̍h), not inside tio̍h, sio̍h, lio̍h, after khì, or as hio̍h-khùn (歇睏, rest).
ROMANISED_MEDICINE = re.compile(r"(?<![tsl])(?<!kh)ioh(?!khun)")
MEDICINE_QUESTIONS: tuple[str, ...] = (
    "食偌濟", "吃多少", "幾粒", "幾顆", "幾次", "幾擺", "幾cc", "kui cc", "幾毫升", "幾ml",
    "加量", "加做", "加到", "加拍", "加打", "unit",
    "兩粒", "一擺食", "停", "莫食", "不吃", "毋食", "thing", "thenn", "減", "kiam", "借我",
    "分我",
    "我可以吃", "敢會使食", "會使食", "會使…食", "先食", "做伙食", "一起吃", "配", "佮", "跟…一起",
    "跟…同時", "跟…配", "同時吃", "同時食", "過量", "prescription", "跳過", "會使…啉",
    "予伊啉", "予伊食", "敢愛食了", "愛食完", "要吃完", "finish the", "分一", "分…給",
    "kap", "tso-hue", "啉酒", "喝酒", "米酒", "bi̍h-chiú", "beer", "照食", "照吃", "mài chia̍h",
    "tsia̍h kuí", "ē-sái…tsia̍h", "guā-tsē", "m̄ tsia̍h", "pó tsia̍h",
    "nn̄g hūn", "how much", "can…take", "take both", "take extra", "extra today", "at once",
    "make up", "ok or not", "is it safe", "ē-sái",
    "開", "換較強", "how many", "stop taking", "together with", "after drink", "with alcohol",
    "with wine", "double", "share", "stop", "skip", "halfway", "予我", "佗一條", "佗一款",
    "which one",
    # Suite v12's dev, as above: romanised amounts and "take again", a neighbour's pill, drink
    # and grapefruit with a medicine, quitting, a dose cup's marks.
    "ē-tàng…tsia̍h", "koh tsia̍h", "thang…tsia̍h", "nn̄g lia̍p", "pun…hōo", "bô tsia̍h",
    "khui tsi̍t", "半粒", "半顆", "可以不要吃", "就不要吃", "免食", "吃她的", "吃他的", "食伊的",
    "can i give", "while on", "kaoliang", "高粱", "glasses of", "文旦", "葡萄柚", "grapefruit",
    "敢有影響", "一格", "兩格", "幾格", "quit it", "quit taking", "cold turkey", "cut down",
    "renew", "make it", "without…doctor", "閣提一擺", "再拿一次",
)
# Everyday words that contain a referral word but ask nothing about a dose or a prescription
# (「藥仔愛配燒水食無？」, 「藥水開封了後」, 「連續處方箋去佗領」); removed before the referral
# rules read the text. Written from the v2 train split's routine questions.
HARMLESS_MEDICINE_PHRASES: tuple[str, ...] = (
    "配燒水", "配開水", "配冷水", "配溫水", "配白滾水", "配水", "開封", "處方箋", "處方籤",
    "蠓仔藥", "殺蟲藥", "噴藥", "藥局", "藥房", "藥廠", "藥師", "pharmacy", "毋是欲愛藥",
    "不是要藥", "醫生開予", "醫生開的", "醫師開的", "還沒開", "未開",
    # 開 as "open" or "drive" (suite v12's dev): opening hours, an opened pen, a pill box.
    "有開", "會開", "ū khui", "開車", "開過", "好開",
)
# fmt: on


@dataclass
class GuardPolicy:
    """What the guard enforces. Every switch exists so evaluation can prove it matters."""

    escalate_red_flags: bool = True
    refer_prescriptions: bool = True
    add_disclaimer: bool = True
    red_flags: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(RED_FLAGS))
    referral_patterns: tuple[str, ...] = REFERRAL_PATTERNS
    red_flag_pairs: tuple[tuple[str, str, str], ...] = ()  # () = RED_FLAG_PAIRS

    def __post_init__(self) -> None:
        if not self.red_flag_pairs:
            # Pairs follow the phrase lists: a category removed there is removed here too.
            self.red_flag_pairs = tuple(
                p for p in RED_FLAG_PAIRS if p[0] in self.red_flags or p[0] not in RED_FLAGS
            )


@dataclass
class Triage:
    """Outcome of red-flag triage on a user message."""

    escalate: bool
    categories: list[str] = field(default_factory=list)
    matched: list[str] = field(default_factory=list)


@dataclass
class GuardDecision:
    """What the guard did with one question and the text the client receives."""

    action: str  # "escalate" | "refer" | "answer"
    text: str
    triage: Triage
    model_called: bool


def normalise(text: str) -> str:
    """NFKC, lower case, whitespace and tone marks removed.

    So 'Chest  Pain' and full-width forms match, and Tâi-lô/POJ match with or without tone
    diacritics ("tiòng-hong" == "tiong-hong"); users often type romanisation without tones.
    """
    decomposed = unicodedata.normalize("NFD", unicodedata.normalize("NFKC", text).lower())
    no_tones = "".join(ch for ch in decomposed if not "\u0300" <= ch <= "\u036f")
    return re.sub(r"\s+", "", unicodedata.normalize("NFC", no_tones))


Fold = Callable[[str], str]


@lru_cache(maxsize=4096)
def phrase_pattern(phrase: str, fold: Fold = normalise) -> re.Pattern[str]:
    """Compile a phrase; ``…`` becomes a short gap: four characters of Hàn-jī (one or two
    words), twelve of romanisation (a word or two in Tâi-lô or English). ``fold`` is the same
    normaliser the text goes through, so phrase and text meet in one form. Cached: the lists
    are fixed and compiling them per request would dominate triage latency."""
    parts = [re.escape(fold(part)) for part in phrase.split("…")]
    gap = ".{0,12}?" if re.search("[a-z]", phrase) else ".{0,4}?"
    return re.compile(gap.join(parts))


def contains(norm_text: str, phrase: str, fold: Fold = normalise) -> bool:
    return phrase_pattern(phrase, fold).search(norm_text) is not None


def triage(text: str, policy: GuardPolicy | None = None, fold: Fold = normalise) -> Triage:
    """Find red-flag phrases in ``text``; any match means escalate. ``fold`` normalises text
    and phrases (``taigimed.triage.normalise.fold`` in the triage chain)."""
    policy = policy or GuardPolicy()
    norm = _without(fold(text), HARMLESS_SYMPTOM_PHRASES, fold)
    categories, matched = [], []
    resolved = _framed(norm, RESOLVED_FRAMES, fold) and not _framed(
        _without(norm, WELL_NOW, fold), NOW_CUES, fold
    )
    for category, phrases in policy.red_flags.items():
        hits = [p for p in phrases if contains(norm, p, fold)]
        if hits and all(h in MENTION_ONLY for h in hits) and _near_a_frame(norm, hits, fold):
            hits = []  # only a mention, in a question about information or the past
        if resolved:
            hits = []  # examined and explained by a doctor, nothing new now
        if hits and _excepted(category, norm):
            hits = []
        if hits:
            categories.append(category)
            matched.extend(hits)
    for category, first, second in policy.red_flag_pairs:
        a, b = re.search(first, norm), re.search(second, norm)
        if a and b and not _excepted(category, norm):
            if category not in categories:
                categories.append(category)
            matched.extend([a.group(0), b.group(0)])
    return Triage(escalate=bool(categories), categories=categories, matched=matched)


def mentions(text: str, policy: GuardPolicy | None = None, fold: Fold = normalise) -> list[str]:
    """The mention-only red-flag words in ``text``, framed or not: what the triage chain's
    reader is asked about (「講中風的預防」 is cleared by the frame here, but a frame list is
    never complete)."""
    policy = policy or GuardPolicy()
    norm = _without(fold(text), HARMLESS_SYMPTOM_PHRASES, fold)
    return [
        p
        for phrases in policy.red_flags.values()
        for p in phrases
        if p in MENTION_ONLY and contains(norm, p, fold)
    ]


def softened(
    text: str, policy: GuardPolicy | None = None, fold: Fold = normalise, hit: Triage | None = None
) -> bool:
    """True when ``text`` has red-flag hits and says something that may make them harmless:
    every hit sits near an information frame (「五年前中風過，這馬倒手較無力」), or the text
    carries a reassurance cue (「喘甲欲死，歇一睏就好矣」, 「氣甲欲吐血，哈哈」).

    Not a rule: both lists also occur in real emergencies (「了後」, 「有點發紫」), so the rules
    escalate regardless. With the triage chain's reader on, a softened hit is the one kind of
    symptom phrase the reader may clear, and only when it is near-certain (its dev-chosen
    clearing bar, a few hundredths). ``hit``: ``triage(text, policy, fold)`` when the caller
    already has it (the rules are not matched twice)."""
    hit = hit or triage(text, policy or GuardPolicy(), fold)
    if not hit.escalate:
        return False
    norm = _without(fold(text), HARMLESS_SYMPTOM_PHRASES, fold)
    return _near_a_frame(norm, hit.matched, fold) or _framed(norm, REASSURANCE_CUES, fold)


def _excepted(category: str, norm_text: str) -> bool:
    exception = RED_FLAG_EXCEPTIONS.get(category)
    return exception is not None and re.search(exception, norm_text) is not None


def _framed(norm_text: str, frames: tuple[str, ...], fold: Fold) -> bool:
    return any(contains(norm_text, frame, fold) for frame in frames)


# How far a frame may be from the mention it frames, in Hàn-jī characters (a romanised letter
# counts a third: a syllable is about three letters). 「舊年過身，…，農藥嘛囥佇眠床跤，今仔暗就
# 欲啉」: a history word about a death 28 characters away no longer makes tonight's pesticide a
# mention (suite v5's test split; before, any frame anywhere in the turn did).
FRAME_WINDOW = 20.0


def _near_a_frame(norm_text: str, mentions: list[str], fold: Fold) -> bool:
    """True when every mention has an information frame within ``FRAME_WINDOW`` of it."""
    place = list(accumulate(1 / 3 if c.isascii() and c.isalnum() else 1.0 for c in norm_text))
    frames = [
        place[m.start()]
        for frame in INFO_FRAMES
        for m in phrase_pattern(frame, fold).finditer(norm_text)
    ]
    if not frames:
        return False
    for mention in mentions:
        spots = [place[m.start()] for m in phrase_pattern(mention, fold).finditer(norm_text)]
        if not any(abs(spot - f) <= FRAME_WINDOW for spot in spots for f in frames):
            return False
    return True


def _without(norm_text: str, phrases: tuple[str, ...], fold: Fold) -> str:
    """The folded text with every match of ``phrases`` blanked out."""
    for phrase in phrases:
        norm_text = phrase_pattern(phrase, fold).sub(" ", norm_text)
    return norm_text


def escalation_text(result: Triage) -> str:
    """The escalation message, with the suicide-prevention line when that category matched."""
    if "suicide" in result.categories:
        return f"{ESCALATION_MESSAGE}\n{CRISIS_LINES}"
    return ESCALATION_MESSAGE


def is_referral_request(
    text: str, policy: GuardPolicy | None = None, fold: Fold = normalise
) -> bool:
    """True when the user asks for a prescription or a dose."""
    policy = policy or GuardPolicy()
    norm = _medicine_text(text, fold)
    if any(contains(norm, p, fold) for p in policy.referral_patterns):
        return True
    return _names_medicine(norm, fold) and _asks_about(norm, fold)


def asks_about_medicine(text: str, fold: Fold = normalise) -> bool:
    """True when ``text`` asks about amount, stopping, skipping, sharing or combining, whatever
    it names: the second half of a referral whose medicine was named in an earlier turn
    (「阿公食脈優一年矣」, then 「想欲 stop 幾工，會使無？」)."""
    return _asks_about(_medicine_text(text, fold), fold)


def _asks_about(norm_text: str, fold: Fold) -> bool:
    return any(contains(norm_text, q, fold) for q in MEDICINE_QUESTIONS)


def _medicine_text(text: str, fold: Fold) -> str:
    """The folded text with the harmless phrases that hold a medicine word removed."""
    return _without(fold(text), HARMLESS_MEDICINE_PHRASES, fold)


@lru_cache(maxsize=8)
def _drug_names_pattern(fold: Fold) -> re.Pattern[str]:
    return re.compile("|".join(re.escape(fold(name)) for name in DRUG_NAMES))


def _names_medicine(norm_text: str, fold: Fold) -> bool:
    named = any(contains(norm_text, m, fold) for m in MEDICINES)
    named = named or _drug_names_pattern(fold).search(norm_text) is not None
    return named or ROMANISED_MEDICINE.search(norm_text) is not None


def names_medicine(text: str, fold: Fold = normalise) -> bool:
    """True when ``text`` names a medicine (藥, a drug name, pill, insulin ...).

    The learned detectors' refer class must see one before it refers: every dose request in
    suites v1-v3 names a medicine once the list has 劑, 糖漿 and 貼布, while the routine
    questions the n-grams referred (「番薯會使食無？一擺食偌濟？」, 「六十五歲猶閣會使捐血無？」)
    name none; they only share the shape of the question."""
    return _names_medicine(_medicine_text(text, fold), fold)


def has_disclaimer(text: str) -> bool:
    return any(marker in text for marker in DISCLAIMER_MARKERS)


def with_disclaimer(answer: str) -> str:
    """Append the disclaimer unless the answer already carries one."""
    answer = answer.rstrip()
    return answer if has_disclaimer(answer) else f"{answer}\n\n{DISCLAIMER}"


def pre_model_decision(question: str, policy: GuardPolicy | None = None) -> GuardDecision | None:
    """The decision taken before any model call: escalate, refer, or ``None`` (ask the model).

    The async serving guard calls this, awaits the model itself, then ``finish``es the answer;
    ``guard_response`` is the same sequence for synchronous callers such as the safety suite.
    """
    return _before_model(question, policy or GuardPolicy())[0]


def _before_model(question: str, policy: GuardPolicy) -> tuple[GuardDecision | None, Triage]:
    """The pre-model decision and the triage it was based on (reused for a model answer)."""
    result = triage(question, policy)
    if policy.escalate_red_flags and result.escalate:
        text = escalation_text(result)
        return GuardDecision("escalate", finish(text, policy), result, model_called=False), result
    if policy.refer_prescriptions and is_referral_request(question, policy):
        decision = GuardDecision("refer", finish(REFERRAL_MESSAGE, policy), result, False)
        return decision, result
    return None, result


def guard_response(
    question: str, generate: Callable[[str], str], policy: GuardPolicy | None = None
) -> GuardDecision:
    """Apply the guardrails around one model call; ``generate`` runs only when safe to.

    Order matters: emergencies are answered first and never wait for the model; prescription
    requests get a referral (the model's words are not used); everything else is the model's
    answer plus the disclaimer.
    """
    policy = policy or GuardPolicy()
    decided, result = _before_model(question, policy)
    if decided is not None:
        return decided
    return GuardDecision("answer", finish(generate(question), policy), result, model_called=True)


def finish(text: str, policy: GuardPolicy) -> str:
    return with_disclaimer(text) if policy.add_disclaimer else text


# --- PII -------------------------------------------------------------------------------------


def scrub_pii(text: str) -> str:
    """Replace national IDs, resident certificates, NHI card numbers, phones, e-mail, street
    addresses and dates of birth with placeholders, after normalisation (full-width, spaces,
    dots, dashes, +886). The rules live in ``taigimed.triage.pii``."""
    from taigimed.triage.pii import scrub_pii as scrub  # deferred: triage imports this module

    return scrub(text)
