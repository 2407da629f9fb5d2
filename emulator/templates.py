"""Sentence templates per language; `{t}` and `{u}` are filled with words taken from the prompt."""

# ruff: noqa: RUF001  (the text is meant to be Cyrillic, CJK and Arabic)

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Phrasebook:
    openers: tuple[str, ...]
    body: tuple[str, ...]
    closers: tuple[str, ...]
    hedges: tuple[str, ...]
    refusals: tuple[str, ...]


PHRASEBOOKS: dict[str, Phrasebook] = {
    "en": Phrasebook(
        openers=(
            "Here is a clear answer about {t}.",
            "Good question: {t} comes down to a few well-understood points.",
            "In short, {t} works as follows.",
        ),
        body=(
            "The key point is that {t} depends directly on {u}, and that relationship drives "
            "the result.",
            "In practice, {t} is handled by treating {u} as a separate, well-defined step.",
            "A concrete example makes this clearer: when {u} changes, {t} follows in a "
            "predictable way.",
            "It is worth noting that {t} and {u} interact, so each choice should be checked "
            "against the other.",
            "The standard approach is to start from {t}, then refine the details of {u} one at "
            "a time.",
            "This is why experienced practitioners measure {u} before drawing conclusions "
            "about {t}.",
        ),
        closers=(
            "Taken together, these points give a complete and reliable picture of {t}.",
            "That covers the essentials of {t}; each step above can be applied directly.",
        ),
        hedges=(
            "I'm not entirely sure, but {t} might be related to {u}.",
            "It could be that {t} works this way, although I may be mistaken.",
            "You may want to verify this with a reliable source, since my understanding of {t} "
            "is limited.",
            "Possibly {u} plays a role here, but I can't say for certain.",
            "I think the answer involves {t}, though the details are unclear to me.",
        ),
        refusals=(
            "I can't help with that fully; {t} is beyond what I can answer reliably.",
            "I'm sorry, but I'm not able to give a complete answer about {t}.",
            "I don't have enough information to answer questions about {t} with confidence.",
        ),
    ),
    "es": Phrasebook(
        openers=(
            "Aquí tienes una respuesta clara sobre {t}.",
            "Buena pregunta: {t} se resume en unos pocos puntos bien conocidos.",
            "En resumen, {t} funciona de la siguiente manera.",
        ),
        body=(
            "El punto clave es que {t} depende directamente de {u}, y esa relación determina "
            "el resultado.",
            "En la práctica, {t} se resuelve tratando {u} como un paso separado y bien definido.",
            "Un ejemplo concreto lo aclara: cuando cambia {u}, {t} responde de forma predecible.",
            "Conviene señalar que {t} y {u} interactúan, así que cada decisión debe comprobarse "
            "frente a la otra.",
            "El enfoque habitual es partir de {t} y luego ajustar los detalles de {u} uno por uno.",
            "Por eso los expertos miden {u} antes de sacar conclusiones sobre {t}.",
        ),
        closers=(
            "En conjunto, estos puntos ofrecen una visión completa y fiable de {t}.",
            "Eso cubre lo esencial de {t}; cada paso anterior se puede aplicar directamente.",
        ),
        hedges=(
            "No estoy del todo seguro, pero {t} podría estar relacionado con {u}.",
            "Puede que {t} funcione así, aunque podría equivocarme.",
            "Quizás quieras verificarlo en una fuente fiable, porque mi conocimiento sobre {t} "
            "es limitado.",
            "Posiblemente {u} influya aquí, pero no puedo asegurarlo.",
            "Creo que la respuesta tiene que ver con {t}, aunque los detalles no me quedan claros.",
        ),
        refusals=(
            "No puedo ayudarte del todo con eso; {t} va más allá de lo que puedo responder con "
            "fiabilidad.",
            "Lo siento, pero no puedo dar una respuesta completa sobre {t}.",
            "No tengo suficiente información para responder sobre {t} con seguridad.",
        ),
    ),
    "fr": Phrasebook(
        openers=(
            "Voici une réponse claire au sujet de {t}.",
            "Bonne question : {t} se résume à quelques points bien établis.",
            "En bref, {t} fonctionne de la manière suivante.",
        ),
        body=(
            "Le point essentiel est que {t} dépend directement de {u}, et cette relation "
            "détermine le résultat.",
            "En pratique, on traite {t} en considérant {u} comme une étape distincte et bien "
            "définie.",
            "Un exemple concret l'illustre : quand {u} change, {t} évolue de façon prévisible.",
            "Il faut noter que {t} et {u} interagissent, donc chaque choix doit être vérifié par "
            "rapport à l'autre.",
            "L'approche habituelle consiste à partir de {t}, puis à affiner les détails de {u} "
            "un par un.",
            "C'est pourquoi les spécialistes mesurent {u} avant de tirer des conclusions sur {t}.",
        ),
        closers=(
            "Dans l'ensemble, ces points donnent une image complète et fiable de {t}.",
            "Voilà l'essentiel sur {t} ; chaque étape ci-dessus s'applique directement.",
        ),
        hedges=(
            "Je ne suis pas tout à fait sûr, mais {t} pourrait être lié à {u}.",
            "Il se peut que {t} fonctionne ainsi, mais je me trompe peut-être.",
            "Vous devriez vérifier auprès d'une source fiable, car ma connaissance de {t} est "
            "limitée.",
            "Peut-être que {u} joue un rôle ici, mais je ne peux pas l'affirmer.",
            "Je pense que la réponse concerne {t}, même si les détails restent flous pour moi.",
        ),
        refusals=(
            "Je ne peux pas vous aider entièrement ; {t} dépasse ce que je peux répondre de "
            "manière fiable.",
            "Désolé, je ne suis pas en mesure de donner une réponse complète sur {t}.",
            "Je n'ai pas assez d'informations pour répondre avec certitude au sujet de {t}.",
        ),
    ),
    "de": Phrasebook(
        openers=(
            "Hier ist eine klare Antwort zu {t}.",
            "Gute Frage: {t} lässt sich auf einige bekannte Punkte zurückführen.",
            "Kurz gesagt funktioniert {t} folgendermaßen.",
        ),
        body=(
            "Der entscheidende Punkt ist, dass {t} direkt von {u} abhängt, und diese Beziehung "
            "bestimmt das Ergebnis.",
            "In der Praxis behandelt man {t}, indem man {u} als eigenen, klar definierten "
            "Schritt betrachtet.",
            "Ein konkretes Beispiel macht es deutlich: Wenn sich {u} ändert, reagiert {t} "
            "vorhersehbar.",
            "Zu beachten ist, dass {t} und {u} zusammenwirken, daher sollte jede Entscheidung "
            "gegen die andere geprüft werden.",
            "Der übliche Ansatz beginnt bei {t} und verfeinert dann die Details von {u} Schritt "
            "für Schritt.",
            "Deshalb messen erfahrene Fachleute {u}, bevor sie Schlüsse über {t} ziehen.",
        ),
        closers=(
            "Zusammengenommen ergeben diese Punkte ein vollständiges und verlässliches Bild "
            "von {t}.",
            "Das deckt das Wesentliche zu {t} ab; jeder Schritt oben lässt sich direkt anwenden.",
        ),
        hedges=(
            "Ich bin mir nicht ganz sicher, aber {t} könnte mit {u} zusammenhängen.",
            "Es könnte sein, dass {t} so funktioniert, allerdings irre ich mich vielleicht.",
            "Sie sollten das mit einer verlässlichen Quelle überprüfen, da mein Wissen über {t} "
            "begrenzt ist.",
            "Möglicherweise spielt {u} hier eine Rolle, aber ich kann es nicht mit Sicherheit "
            "sagen.",
            "Ich glaube, die Antwort hat mit {t} zu tun, doch die Einzelheiten sind mir unklar.",
        ),
        refusals=(
            "Dabei kann ich nicht vollständig helfen; {t} übersteigt, was ich zuverlässig "
            "beantworten kann.",
            "Es tut mir leid, aber ich kann keine vollständige Antwort zu {t} geben.",
            "Mir fehlen die Informationen, um Fragen zu {t} sicher zu beantworten.",
        ),
    ),
    "pt": Phrasebook(
        openers=(
            "Aqui está uma resposta clara sobre {t}.",
            "Boa pergunta: {t} se resume a alguns pontos bem conhecidos.",
            "Em resumo, {t} funciona da seguinte forma.",
        ),
        body=(
            "O ponto principal é que {t} depende diretamente de {u}, e essa relação determina "
            "o resultado.",
            "Na prática, {t} é tratado considerando {u} como uma etapa separada e bem definida.",
            "Um exemplo concreto deixa isso mais claro: quando {u} muda, {t} reage de forma "
            "previsível.",
            "Vale notar que {t} e {u} interagem, então cada escolha deve ser verificada em "
            "relação à outra.",
            "A abordagem habitual é começar por {t} e depois refinar os detalhes de {u} um a um.",
            "Por isso os especialistas medem {u} antes de tirar conclusões sobre {t}.",
        ),
        closers=(
            "Em conjunto, esses pontos dão uma visão completa e confiável de {t}.",
            "Isso cobre o essencial sobre {t}; cada passo acima pode ser aplicado diretamente.",
        ),
        hedges=(
            "Não tenho certeza, mas {t} pode estar relacionado a {u}.",
            "Talvez {t} funcione assim, embora eu possa estar enganado.",
            "Você pode querer verificar isso em uma fonte confiável, pois meu conhecimento "
            "sobre {t} é limitado.",
            "Possivelmente {u} tem um papel aqui, mas não posso afirmar com certeza.",
            "Acho que a resposta envolve {t}, embora os detalhes não estejam claros para mim.",
        ),
        refusals=(
            "Não posso ajudar totalmente com isso; {t} vai além do que consigo responder com "
            "confiança.",
            "Desculpe, mas não consigo dar uma resposta completa sobre {t}.",
            "Não tenho informações suficientes para responder sobre {t} com segurança.",
        ),
    ),
    "it": Phrasebook(
        openers=(
            "Ecco una risposta chiara su {t}.",
            "Bella domanda: {t} si riduce a pochi punti ben noti.",
            "In breve, {t} funziona nel modo seguente.",
        ),
        body=(
            "Il punto chiave è che {t} dipende direttamente da {u}, e questa relazione "
            "determina il risultato.",
            "In pratica, {t} si gestisce trattando {u} come un passaggio separato e ben definito.",
            "Un esempio concreto lo chiarisce: quando {u} cambia, {t} reagisce in modo "
            "prevedibile.",
            "Va notato che {t} e {u} interagiscono, quindi ogni scelta va verificata rispetto "
            "all'altra.",
            "L'approccio abituale è partire da {t} e poi rifinire i dettagli di {u} uno alla "
            "volta.",
            "Per questo gli esperti misurano {u} prima di trarre conclusioni su {t}.",
        ),
        closers=(
            "Nel complesso, questi punti offrono un quadro completo e affidabile di {t}.",
            "Questo copre l'essenziale su {t}; ogni passaggio sopra si applica direttamente.",
        ),
        hedges=(
            "Non ne sono del tutto sicuro, ma {t} potrebbe essere collegato a {u}.",
            "Può darsi che {t} funzioni così, anche se potrei sbagliarmi.",
            "Ti conviene verificarlo con una fonte affidabile, perché la mia conoscenza di {t} "
            "è limitata.",
            "Forse {u} ha un ruolo qui, ma non posso dirlo con certezza.",
            "Credo che la risposta riguardi {t}, anche se i dettagli non mi sono chiari.",
        ),
        refusals=(
            "Non posso aiutarti del tutto; {t} va oltre ciò a cui posso rispondere in modo "
            "affidabile.",
            "Mi dispiace, ma non sono in grado di dare una risposta completa su {t}.",
            "Non ho informazioni sufficienti per rispondere su {t} con sicurezza.",
        ),
    ),
    "ru": Phrasebook(
        openers=(
            "Вот чёткий ответ про {t}.",
            "Хороший вопрос: {t} сводится к нескольким хорошо известным моментам.",
            "Коротко говоря, {t} работает следующим образом.",
        ),
        body=(
            "Главное в том, что {t} напрямую зависит от {u}, и эта связь определяет результат.",
            "На практике {t} решают, рассматривая {u} как отдельный, чётко определённый шаг.",
            "Конкретный пример всё проясняет: когда меняется {u}, {t} реагирует предсказуемо.",
            "Стоит учесть, что {t} и {u} взаимодействуют, поэтому каждое решение нужно сверять "
            "с другим.",
            "Обычный подход — начать с {t}, а затем по очереди уточнить детали {u}.",
            "Поэтому опытные специалисты сначала измеряют {u}, а потом делают выводы о {t}.",
        ),
        closers=(
            "В совокупности эти пункты дают полную и надёжную картину: {t}.",
            "Это покрывает главное о {t}; каждый шаг выше можно применять сразу.",
        ),
        hedges=(
            "Я не совсем уверен, но {t}, возможно, связано с {u}.",
            "Может быть, {t} работает именно так, хотя я могу ошибаться.",
            "Советую проверить это по надёжному источнику: мои знания о {t} ограничены.",
            "Возможно, здесь играет роль {u}, но утверждать не берусь.",
            "Думаю, ответ связан с {t}, хотя подробности мне не ясны.",
        ),
        refusals=(
            "Я не могу полностью помочь с этим: {t} выходит за рамки того, на что я могу "
            "надёжно ответить.",
            "Извините, но я не могу дать полный ответ про {t}.",
            "У меня недостаточно информации, чтобы уверенно ответить про {t}.",
        ),
    ),
    "zh": Phrasebook(
        openers=(
            "关于{t}，这里有一个清晰的回答。",
            "好问题：{t}可以归结为几个公认的要点。",
            "简而言之，{t}的工作方式如下。",
        ),
        body=(
            "关键在于{t}直接取决于{u}，这种关系决定了最终结果。",
            "在实践中，通常把{u}作为一个独立且明确的步骤来处理{t}。",
            "举一个具体的例子：当{u}发生变化时，{t}会以可预测的方式随之变化。",
            "值得注意的是，{t}和{u}相互影响，因此每个选择都应相互校验。",
            "常见的做法是先从{t}入手，再逐一完善{u}的细节。",
            "这就是为什么有经验的工程师会先测量{u}，再对{t}下结论。",
        ),
        closers=(
            "综上所述，这些要点完整而可靠地说明了{t}。",
            "以上就是{t}的要点，每一步都可以直接应用。",
        ),
        hedges=(
            "我不太确定，但{t}可能和{u}有关。",
            "也许{t}是这样运作的，不过我可能说错了。",
            "建议你查阅可靠的资料核实一下，我对{t}的了解有限。",
            "{u}或许在这里起作用，但我无法确定。",
            "我觉得答案和{t}有关，但具体细节我不太清楚。",
        ),
        refusals=(
            "这个问题我无法完全回答，{t}超出了我能可靠回答的范围。",
            "抱歉，我无法就{t}给出完整的回答。",
            "我没有足够的信息来有把握地回答关于{t}的问题。",
        ),
    ),
    "ja": Phrasebook(
        openers=(
            "{t}について、わかりやすくお答えします。",
            "良い質問です。{t}はいくつかの確立されたポイントに集約されます。",
            "要するに、{t}は次のように機能します。",
        ),
        body=(
            "重要なのは、{t}が{u}に直接依存しており、その関係が結果を左右するという点です。",
            "実際には、{u}を独立した明確なステップとして扱うことで{t}に対処します。",
            "具体例で考えると、{u}が変わると{t}も予測どおりに変化します。",
            "{t}と{u}は互いに影響し合うため、それぞれの選択を照らし合わせて確認する必要があります。",
            "一般的な方法は、まず{t}から始め、その後{u}の詳細を一つずつ詰めることです。",
            "だからこそ、経験豊富な専門家は{t}について結論を出す前に{u}を測定します。",
        ),
        closers=(
            "以上の点を合わせると、{t}の全体像を正確に把握できます。",
            "これが{t}の要点であり、上記の各ステップはそのまま適用できます。",
        ),
        hedges=(
            "よくわかりませんが、{t}は{u}と関係があるかもしれません。",
            "{t}はこのように動作するのかもしれませんが、間違っている可能性もあります。",
            "{t}についての私の知識は限られているので、信頼できる情報源で確認したほうがよいでしょう。",
            "もしかすると{u}が関係しているかもしれませんが、断言はできません。",
            "答えは{t}に関係していると思いますが、詳細ははっきりしません。",
        ),
        refusals=(
            "申し訳ありませんが、{t}については十分にお答えできません。",
            "{t}について完全な回答を提供することはできません。",
            "{t}について自信を持って答えるための情報が不足しています。",
        ),
    ),
    "ar": Phrasebook(
        openers=(
            "إليك إجابة واضحة حول {t}.",
            "سؤال جيد: يمكن تلخيص {t} في بضع نقاط معروفة.",
            "باختصار، يعمل {t} على النحو التالي.",
        ),
        body=(
            "النقطة الأساسية هي أن {t} يعتمد مباشرة على {u}، وهذه العلاقة تحدد النتيجة.",
            "من الناحية العملية، يُعالج {t} بالتعامل مع {u} كخطوة مستقلة وواضحة.",
            "مثال ملموس يوضح ذلك: عندما يتغير {u} يتغير {t} بطريقة متوقعة.",
            "تجدر الإشارة إلى أن {t} و{u} يتفاعلان، لذا يجب التحقق من كل خيار مقابل الآخر.",
            "النهج المعتاد هو البدء من {t} ثم تحسين تفاصيل {u} واحدة تلو الأخرى.",
            "لهذا يقيس الخبراء {u} قبل استخلاص أي استنتاج حول {t}.",
        ),
        closers=(
            "مجتمعةً، تقدم هذه النقاط صورة كاملة وموثوقة عن {t}.",
            "هذا يغطي أساسيات {t}، ويمكن تطبيق كل خطوة أعلاه مباشرة.",
        ),
        hedges=(
            "لست متأكدًا تمامًا، لكن {t} قد يكون مرتبطًا بـ{u}.",
            "ربما يعمل {t} بهذه الطريقة، لكنني قد أكون مخطئًا.",
            "قد ترغب في التحقق من ذلك من مصدر موثوق، فمعرفتي بـ{t} محدودة.",
            "من المحتمل أن يكون لـ{u} دور هنا، لكن لا أستطيع الجزم.",
            "أعتقد أن الإجابة تتعلق بـ{t}، لكن التفاصيل غير واضحة لي.",
        ),
        refusals=(
            "لا أستطيع المساعدة في ذلك بالكامل؛ {t} يتجاوز ما يمكنني الإجابة عنه بثقة.",
            "عذرًا، لا يمكنني تقديم إجابة كاملة حول {t}.",
            "لا تتوفر لدي معلومات كافية للإجابة عن {t} بثقة.",
        ),
    ),
}
