# ruff: noqa: E501  (template tables: one sentence per line reads better than wrapped)
"""Build the classifier's labelled corpus: services/classifier/corpus/{train,heldout}.jsonl.

Synthetic mails in English, French and German for each label, from templates with random
names, companies, numbers, dates, phrasing and structure (headers, attachment types, DMARC
verdict, PBX route). Two template families per label and language: family A makes the
training set, family B (other subjects, sentences, greetings and structure variants) the
held-out set, so the held-out figures measure more than memorised templates. Fixed seed,
one random generator per set (changing the training templates leaves the held-out set as it
is): running it again gives the same files.

    uv run --frozen --no-sync python scripts/make_classifier_corpus.py [--train N] [--heldout N]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "services" / "classifier" / "corpus"
LANGS = ("en", "fr", "de")

FIRST = ["Anna", "Marc", "Julia", "Thomas", "Sophie", "Lukas", "Camille", "David", "Elena",
         "Pierre", "Hannah", "Olivier", "Sarah", "Jonas", "Claire", "Michael", "Léa", "Felix",
         "Nora", "Antoine", "Laura", "Stefan", "Chloé", "Peter", "Inès", "Max", "Emma", "Hugo"]
LAST = ["Martin", "Schmidt", "Dubois", "Müller", "Bernard", "Weber", "Moreau", "Fischer",
        "Smith", "Laurent", "Wagner", "Johnson", "Lefebvre", "Becker", "Brown", "Roux",
        "Hoffmann", "Garcia", "Keller", "Fontaine", "Wilson", "Schulz", "Girard", "Taylor"]
COMPANY = ["Acme GmbH", "Nordlicht AG", "Boulangerie Dupont", "Helix Systems", "Vertex SARL",
           "Bluewave Ltd", "Kessler & Söhne", "Atelier Lumière", "Orbis Logistics",
           "Greenfield Foods", "Datenwerk GmbH", "Maison Rivière", "Quantix Inc",
           "Alpenrose Hotels", "Cobalt Consulting", "Ferrand Industries", "Brightside Media"]
PRODUCT = ["office chairs", "toner cartridges", "steel brackets", "LED panels", "coffee beans",
           "safety gloves", "laptops", "printer paper", "pallets", "cable ties", "valves",
           "Bürostühle", "Druckerpapier", "cartouches", "gants de sécurité", "Schrauben M6"]
DAYS = {"en": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"],
        "fr": ["lundi", "mardi", "mercredi", "jeudi", "vendredi"],
        "de": ["Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag"]}
SHOPS = ["shop.example", "deals.example", "mode-paris.example", "techstore.example",
         "reisen.example", "wein-versand.example", "newsletter.example"]


def fill(rng: random.Random, lang: str, text: str) -> str:
    name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    values = {
        "name": name, "first": name.split()[0], "other": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
        "company": rng.choice(COMPANY), "product": rng.choice(PRODUCT),
        "n": str(rng.randint(2, 500)), "po": f"{rng.choice(['PO', 'BC', 'BE', 'ORD'])}-"
        f"{rng.randint(10000, 99999)}", "amount": f"{rng.randint(20, 90000):,}".replace(",", "."),
        "pct": str(rng.choice([10, 15, 20, 25, 30, 40, 50, 60, 70])),
        "day": rng.choice(DAYS[lang]), "date": f"{rng.randint(1, 28):02d}.{rng.randint(1, 12):02d}."
        f"{rng.choice([2026, 2027])}", "time": f"{rng.randint(8, 17)}:{rng.choice(['00', '15', '30', '45'])}",
        "ticket": f"#{rng.randint(1000, 99999)}", "phone": f"+{rng.choice([33, 49, 44, 41])} "
        f"{rng.randint(100, 999)} {rng.randint(100000, 9999999)}", "ext": str(rng.randint(100, 899)),
        "dur": f"00:{rng.randint(0, 3):02d}:{rng.randint(3, 59):02d}", "secs": str(rng.randint(4, 180)),
        "shop": rng.choice(SHOPS), "url": f"https://{rng.choice(SHOPS)}/{rng.randint(1000, 9999)}",
        "code": rng.choice(["WINTER", "SALE", "VIP", "HELLO", "BLACK"]) + str(rng.randint(10, 99)),
        "money": f"{rng.randint(1, 90)},{rng.randint(1, 9)} million", "room": rng.choice(
            ["Room 2.14", "Salle Everest", "Besprechungsraum 3", "Teams", "Zoom", "Meet"]),
    }
    return text.format(**values)


# Each label: language -> family -> (subjects, sentences, extras); a mail takes one subject
# and 2-5 sentences; structure comes from the label's structure function.
T: dict[str, dict[str, dict[str, tuple[list[str], list[str]]]]] = {
    "meeting": {
        "en": {"A": (["Meeting on {day} at {time}", "Invitation: project sync {date}",
                      "Can we meet {day}?", "Updated invitation: quarterly review"],
                     ["Would {day} at {time} work for a quick call about the {company} account?",
                      "I've sent a calendar invite for {date} at {time}, {room}.",
                      "Please accept or propose a new time.", "Agenda: budget, hiring, roadmap.",
                      "Let me know if you need to reschedule.", "The meeting will take 45 minutes.",
                      "Do you have an hour on {day} to review the plan with the team?",
                      "Please let me know whether you can attend.",
                      "We can also meet online if that is easier for you."]),
               "B": (["Catch-up next week?", "Scheduling our kickoff", "Workshop {date} - please confirm",
                      "Calendar: steering committee"],
                     ["Are you free {day} afternoon for a one-hour workshop?",
                      "I booked {room} from {time}; dial-in details are in the invite.",
                      "Could you confirm your attendance by tomorrow?",
                      "We'll go through the {company} proposal together.",
                      "If the slot does not suit you, suggest another one in the calendar."])},
        "fr": {"A": (["Réunion {day} à {time}", "Invitation : point projet le {date}",
                      "Peut-on se voir {day} ?"],
                     ["Seriez-vous disponible {day} à {time} pour faire le point ?",
                      "Je vous ai envoyé une invitation pour le {date} à {time}, {room}.",
                      "Merci d'accepter ou de proposer un autre créneau.",
                      "Ordre du jour : budget, recrutement, planning.", "La réunion durera une heure.",
                      "Auriez-vous une heure {day} pour revoir le planning avec l'équipe ?",
                      "Merci de me dire si vous pourrez participer.",
                      "Nous pouvons aussi nous réunir en visio si c'est plus simple."]),
               "B": (["Rendez-vous la semaine prochaine ?", "Planification de l'atelier",
                      "Comité de pilotage du {date}"],
                     ["Êtes-vous libre {day} après-midi pour un atelier ?",
                      "J'ai réservé {room} à partir de {time}, les détails sont dans l'invitation.",
                      "Pouvez-vous confirmer votre présence ?",
                      "Nous passerons en revue la proposition de {company}.",
                      "Si le créneau ne vous convient pas, proposez-en un autre."])},
        "de": {"A": (["Termin am {day} um {time}", "Einladung: Projektbesprechung {date}",
                      "Können wir uns {day} treffen?"],
                     ["Hätten Sie am {day} um {time} Zeit für ein kurzes Gespräch?",
                      "Ich habe Ihnen eine Einladung für den {date} um {time} geschickt, {room}.",
                      "Bitte nehmen Sie die Einladung an oder schlagen Sie einen neuen Termin vor.",
                      "Tagesordnung: Budget, Personal, Planung.", "Das Meeting dauert 45 Minuten.",
                      "Hätten Sie am {day} eine Stunde, um den Plan mit dem Team durchzugehen?",
                      "Geben Sie mir bitte Bescheid, ob Sie teilnehmen können.",
                      "Wir können uns auch online treffen, falls das einfacher ist."]),
               "B": (["Abstimmung nächste Woche?", "Terminplanung Kick-off", "Workshop am {date}"],
                     ["Passt Ihnen {day} Nachmittag für einen Workshop?",
                      "Ich habe {room} ab {time} gebucht, die Einwahldaten stehen in der Einladung.",
                      "Bitte bestätigen Sie Ihre Teilnahme bis morgen.",
                      "Wir besprechen gemeinsam das Angebot von {company}.",
                      "Falls der Termin nicht passt, schlagen Sie bitte einen anderen vor."])}},
    "promotion": {
        "en": {"A": (["{pct}% off everything this weekend", "Last chance: sale ends tonight",
                      "New arrivals you'll love"],
                     ["Shop now and save {pct}% on {product}.", "Use code {code} at checkout.",
                      "Free shipping on orders over 50 EUR.", "Offer valid until {date}.",
                      "View in browser: {url}", "You received this because you subscribed at {shop}."]),
               "B": (["Exclusive deal for members", "Our winter collection is here",
                      "Don't miss out: {pct}% discount"],
                     ["Members get early access to {product} at special prices.",
                      "Discover the collection: {url}", "Limited stock, order today.",
                      "Enter {code} to unlock your gift.", "Unsubscribe or manage your preferences: {url}"])},
        "fr": {"A": (["-{pct}% sur tout ce week-end", "Dernière chance : les soldes se terminent",
                      "Nouveautés à découvrir"],
                     ["Profitez de {pct}% de réduction sur {product}.", "Code promo {code} au paiement.",
                      "Livraison offerte dès 50 EUR.", "Offre valable jusqu'au {date}.",
                      "Voir en ligne : {url}", "Vous recevez cet e-mail car vous êtes inscrit sur {shop}."]),
               "B": (["Offre exclusive membres", "La nouvelle collection est arrivée",
                      "Ne manquez pas nos promotions"],
                     ["Accès en avant-première à {product} à prix réduit.", "Découvrez : {url}",
                      "Stock limité, commandez aujourd'hui.", "Saisissez {code} pour votre cadeau.",
                      "Se désabonner : {url}"])},
        "de": {"A": (["{pct}% Rabatt auf alles", "Letzte Chance: Sale endet heute",
                      "Neu im Sortiment"],
                     ["Jetzt {pct}% auf {product} sparen.", "Gutscheincode {code} an der Kasse eingeben.",
                      "Versandkostenfrei ab 50 EUR.", "Angebot gültig bis {date}.",
                      "Im Browser ansehen: {url}", "Sie erhalten diesen Newsletter, weil Sie sich bei {shop} angemeldet haben."]),
               "B": (["Exklusiv für Mitglieder", "Die Winterkollektion ist da",
                      "Nicht verpassen: Rabattaktion"],
                     ["Mitglieder erhalten {product} zum Vorzugspreis.", "Zur Kollektion: {url}",
                      "Nur solange der Vorrat reicht.", "Mit {code} Geschenk sichern.",
                      "Newsletter abbestellen: {url}"])}},
    "intro": {
        "en": {"A": (["Introduction: {name} <> {other}", "Meet {first} from {company}",
                      "Connecting you two"],
                     ["I'd like to introduce you to {name}, who leads partnerships at {company}.",
                      "I thought you two should meet, you're both working on logistics.",
                      "{first}, meet {other}; I'll let you take it from here.",
                      "Moving myself to bcc."]),
               "B": (["Hello from {company}", "Nice to meet you", "Quick intro"],
                     ["My name is {name} and I just joined {company} as account manager.",
                      "{other} suggested I get in touch with you.",
                      "I'm your new contact person from now on.",
                      "Looking forward to working with you."])},
        "fr": {"A": (["Présentation : {name} / {other}", "Je vous présente {first} de {company}"],
                     ["Je souhaite vous présenter {name}, responsable des partenariats chez {company}.",
                      "Je pense que vous devriez échanger, vous travaillez tous deux sur la logistique.",
                      "{first}, voici {other} ; je vous laisse poursuivre.", "Je me mets en copie cachée."]),
               "B": (["Bonjour de la part de {company}", "Enchanté de faire votre connaissance"],
                     ["Je m'appelle {name} et je viens de rejoindre {company}.",
                      "{other} m'a conseillé de vous contacter.",
                      "Je serai désormais votre interlocuteur.", "Au plaisir de collaborer avec vous."])},
        "de": {"A": (["Vorstellung: {name} und {other}", "Darf ich vorstellen: {first} von {company}"],
                     ["Ich möchte Ihnen {name} vorstellen, verantwortlich für Partnerschaften bei {company}.",
                      "Ich dachte, Sie sollten sich kennenlernen.",
                      "{first}, das ist {other}; ich überlasse Ihnen den Rest.", "Ich setze mich in Bcc."]),
               "B": (["Grüße von {company}", "Schön, Sie kennenzulernen"],
                     ["Mein Name ist {name}, ich bin neu bei {company}.",
                      "{other} hat mir empfohlen, mich bei Ihnen zu melden.",
                      "Ich bin ab sofort Ihr Ansprechpartner.", "Ich freue mich auf die Zusammenarbeit."])}},
    "voicemail": {
        "en": {"A": (["Voicemail Message ({name} > Mailbox {ext}) From:{phone}",
                      "Voice Message from {name} ({phone})"],
                     ["You have a new voice message.", "Caller: {name} {phone}", "Mailbox: {ext}",
                      "Duration: {dur}", "Received: {date} {time}"]),
               "B": (["New voicemail from {phone}", "Missed call and message: {phone}"],
                     ["A caller left a message.", "Caller ID: {phone}", "Extension: {ext}",
                      "Length: {secs} seconds", "Time: {date} {time}", "The recording is attached."])},
        "fr": {"A": (["Nouveau message vocal de {phone}", "Messagerie vocale : {name} ({phone})"],
                     ["Vous avez un nouveau message vocal.", "Appelant : {phone}", "Poste : {ext}",
                      "Durée : {dur}", "Reçu le {date} à {time}"]),
               "B": (["Message vocal ({phone})", "Appel manqué avec message"],
                     ["Un correspondant a laissé un message.", "Numéro : {phone}",
                      "Durée du message : {secs} secondes", "L'enregistrement est joint."])},
        "de": {"A": (["Neue Sprachnachricht von {phone}", "Voicemail von {name} ({phone})"],
                     ["Sie haben eine neue Sprachnachricht.", "Anrufer: {phone}", "Nebenstelle: {ext}",
                      "Dauer: {dur}", "Empfangen: {date} {time}"]),
               "B": (["Sprachnachricht ({phone})", "Verpasster Anruf mit Nachricht"],
                     ["Ein Anrufer hat eine Nachricht hinterlassen.", "Rufnummer: {phone}",
                      "Länge: {secs} Sekunden", "Die Aufnahme ist angehängt."])}},
    "order": {
        "en": {"A": (["Purchase order {po}", "New order {po} from {company}", "PO {po} attached"],
                     ["Please find attached our purchase order {po}.",
                      "We would like to order {n} units of {product}.",
                      "Delivery address as usual, requested delivery by {date}.",
                      "Total amount: {amount} EUR excl. VAT.", "Please confirm receipt of the order."]),
               "B": (["Order confirmation request {po}", "Re-order: {product}", "Our order for {date}"],
                     ["Attached is the order form for {n} x {product}.",
                      "Kindly send an order confirmation with the delivery date.",
                      "Invoice to {company}, accounts payable.", "Order value {amount} EUR.",
                      "Payment terms 30 days net as agreed."])},
        "fr": {"A": (["Bon de commande {po}", "Nouvelle commande {po} - {company}"],
                     ["Veuillez trouver ci-joint notre bon de commande {po}.",
                      "Nous souhaitons commander {n} unités de {product}.",
                      "Livraison souhaitée avant le {date}.", "Montant total : {amount} EUR HT.",
                      "Merci de confirmer la bonne réception de la commande."]),
               "B": (["Demande de confirmation de commande {po}", "Réassort {product}"],
                     ["Ci-joint le formulaire de commande pour {n} x {product}.",
                      "Merci de nous envoyer une confirmation avec la date de livraison.",
                      "Facturation à {company}.", "Valeur de la commande : {amount} EUR.",
                      "Paiement à 30 jours comme convenu."])},
        "de": {"A": (["Bestellung {po}", "Neue Bestellung {po} von {company}"],
                     ["Anbei erhalten Sie unsere Bestellung {po}.",
                      "Wir bestellen {n} Stück {product}.", "Gewünschter Liefertermin: {date}.",
                      "Gesamtbetrag: {amount} EUR netto.", "Bitte bestätigen Sie den Auftrag."]),
               "B": (["Auftragsbestätigung erbeten {po}", "Nachbestellung {product}"],
                     ["Im Anhang das Bestellformular für {n} x {product}.",
                      "Bitte senden Sie uns eine Auftragsbestätigung mit Liefertermin.",
                      "Rechnung an {company}, Buchhaltung.", "Auftragswert {amount} EUR.",
                      "Zahlungsziel 30 Tage netto wie vereinbart."])}},
    "support": {
        "en": {"A": (["Problem with my account", "Question about invoice {ticket}",
                      "Help needed: delivery not received", "Wrong amount on invoice {ticket}",
                      "Cannot access the portal", "Request for assistance", "Missing items in order {po}",
                      "Please cancel my subscription"],
                     ["I have a problem and would appreciate your help.",
                      "Since {day} I cannot log in to the portal, it says my password is invalid.",
                      "Could you explain why invoice {ticket} shows {amount} EUR?",
                      "The {product} we received are damaged, what should we do?",
                      "Please get back to me as soon as possible.",
                      "Our delivery of {product} arrived incomplete, {n} items are missing.",
                      "We were billed {amount} EUR although our contract says otherwise.",
                      "Is there a way to reset the password for a second user?",
                      "I still have not heard back about ticket {ticket}, which is frustrating.",
                      "The tracking link does not work and the parcel has not arrived.",
                      "What do we need to do to get a credit note?",
                      "The app crashes every time I open the reports page."]),
               "B": (["Urgent: issue with our last shipment", "How do I change my billing address?",
                      "Complaint regarding {ticket}"],
                     ["I'm writing because something went wrong with our order.",
                      "We were charged twice and need a refund.",
                      "How can I update the contact details on our contract?",
                      "Nobody answered my previous request, I'm quite disappointed.",
                      "Can you tell me what the next steps are?"])},
        "fr": {"A": (["Problème avec mon compte", "Question sur la facture {ticket}",
                      "Montant erroné sur la facture {ticket}", "Impossible d'accéder au portail",
                      "Demande d'assistance", "Articles manquants dans la commande {po}",
                      "Résiliation de mon abonnement"],
                     ["J'ai un problème et j'aurais besoin de votre aide.",
                      "Depuis {day}, je ne peux plus me connecter au portail.",
                      "Pourriez-vous m'expliquer pourquoi la facture {ticket} indique {amount} EUR ?",
                      "Les {product} reçus sont endommagés, que devons-nous faire ?",
                      "Merci de me répondre rapidement.",
                      "La livraison de {product} est incomplète, il manque {n} articles.",
                      "On nous a facturé {amount} EUR alors que le contrat prévoit autre chose.",
                      "Comment réinitialiser le mot de passe d'un deuxième utilisateur ?",
                      "Je n'ai toujours pas de nouvelles du ticket {ticket}, c'est frustrant.",
                      "Le lien de suivi ne fonctionne pas et le colis n'est pas arrivé.",
                      "Que devons-nous faire pour obtenir un avoir ?",
                      "L'application plante dès que j'ouvre la page des rapports."]),
               "B": (["Réclamation concernant {ticket}", "Comment modifier mon adresse de facturation ?"],
                     ["Je vous écris car notre commande ne s'est pas bien passée.",
                      "Nous avons été débités deux fois et souhaitons un remboursement.",
                      "Comment mettre à jour les coordonnées de notre contrat ?",
                      "Personne n'a répondu à ma demande précédente.",
                      "Pouvez-vous m'indiquer la marche à suivre ?"])},
        "de": {"A": (["Problem mit meinem Konto", "Frage zur Rechnung {ticket}",
                      "Falscher Betrag auf Rechnung {ticket}", "Kein Zugang zum Portal",
                      "Bitte um Unterstützung", "Fehlende Artikel in Bestellung {po}",
                      "Kündigung meines Abonnements"],
                     ["Ich habe ein Problem und bitte um Ihre Hilfe.",
                      "Seit {day} kann ich mich nicht mehr im Portal anmelden.",
                      "Können Sie mir erklären, warum die Rechnung {ticket} {amount} EUR ausweist?",
                      "Die gelieferten {product} sind beschädigt, was sollen wir tun?",
                      "Bitte melden Sie sich schnellstmöglich.",
                      "Die Lieferung {product} ist unvollständig, es fehlen {n} Stück.",
                      "Uns wurden {amount} EUR berechnet, obwohl der Vertrag etwas anderes vorsieht.",
                      "Wie setze ich das Passwort für einen zweiten Benutzer zurück?",
                      "Zu Ticket {ticket} habe ich immer noch keine Rückmeldung, das ist ärgerlich.",
                      "Der Sendungslink funktioniert nicht und das Paket ist nicht angekommen.",
                      "Was müssen wir tun, um eine Gutschrift zu erhalten?",
                      "Die App stürzt jedes Mal ab, wenn ich die Berichte öffne."]),
               "B": (["Reklamation zu {ticket}", "Wie ändere ich meine Rechnungsadresse?"],
                     ["Ich schreibe Ihnen, weil bei unserer Bestellung etwas schiefgelaufen ist.",
                      "Uns wurde doppelt abgebucht, wir bitten um Erstattung.",
                      "Wie kann ich die Kontaktdaten in unserem Vertrag ändern?",
                      "Auf meine letzte Anfrage hat niemand geantwortet.",
                      "Können Sie mir die nächsten Schritte nennen?"])}},
    "spam": {
        "en": {"A": (["You have WON {money} dollars!!!", "URGENT business proposal",
                      "Verify your account now"],
                     ["Congratulations, you were selected to receive {money} USD.",
                      "Send your bank details and a processing fee to claim the prize.",
                      "Your mailbox will be suspended, click here to verify: {url}",
                      "Cheap pills, no prescription needed.", "Act now, this offer expires in 24 hours!!!"]),
               "B": (["Re: your payment is on hold", "Inheritance of {money}", "Security alert"],
                     ["I am a lawyer representing a deceased client with no heirs.",
                      "We detected unusual sign-in activity, confirm your password at {url}",
                      "Transfer the release fee and the funds will be yours.",
                      "Keep this strictly confidential.", "Earn 5000 EUR a week from home!!!"])},
        "fr": {"A": (["Vous avez GAGNÉ {money} euros !!!", "Votre compte sera suspendu"],
                     ["Félicitations, vous avez été sélectionné pour recevoir {money} EUR.",
                      "Envoyez vos coordonnées bancaires et les frais de dossier.",
                      "Cliquez ici pour vérifier votre compte : {url}",
                      "Offre valable 24 heures seulement !!!"]),
               "B": (["Héritage de {money}", "Alerte de sécurité"],
                     ["Je suis avocat et je représente un client décédé sans héritier.",
                      "Activité suspecte détectée, confirmez votre mot de passe : {url}",
                      "Virez les frais de déblocage et les fonds seront à vous.",
                      "Gagnez 5000 EUR par semaine depuis chez vous !!!"])},
        "de": {"A": (["Sie haben {money} Euro GEWONNEN!!!", "Ihr Konto wird gesperrt"],
                     ["Herzlichen Glückwunsch, Sie wurden ausgewählt, {money} EUR zu erhalten.",
                      "Senden Sie Ihre Bankdaten und eine Bearbeitungsgebühr.",
                      "Klicken Sie hier, um Ihr Konto zu bestätigen: {url}",
                      "Angebot nur 24 Stunden gültig!!!"]),
               "B": (["Erbschaft von {money}", "Sicherheitswarnung"],
                     ["Ich bin Anwalt eines verstorbenen Mandanten ohne Erben.",
                      "Verdächtige Anmeldung erkannt, bestätigen Sie Ihr Passwort: {url}",
                      "Überweisen Sie die Freigabegebühr und das Geld gehört Ihnen.",
                      "Verdienen Sie 5000 EUR pro Woche von zu Hause!!!"])}},
    "unknown": {
        "en": {"A": (["Re: lunch", "FYI", "Photos from the weekend", "Out of office", "Re: Friday",
                      "Away until {date}", "Fwd: article"],
                     ["Thanks, see you later.", "Here are the photos I promised.",
                      "Just forwarding this for your information.",
                      "I am out of the office until {date} with limited access to email.",
                      "Ok, sounds good.", "Got it, thank you.", "Sure, no problem.",
                      "I'll be back on {date}; for anything urgent call {phone}.",
                      "Thanks for sending this over.", "Perfect, talk soon.",
                      "Thought you might find this article interesting."]),
               "B": (["Notes", "Re: Re: that thing", "Automatic reply: {name}"],
                     ["Noted, thanks.", "See attached notes from yesterday.",
                      "I'm currently away and will reply on my return.", "Cheers!",
                      "Will do."])},
        "fr": {"A": (["Re: déjeuner", "Pour info", "Absence du bureau", "Re: vendredi",
                      "Absent jusqu'au {date}", "TR: article"],
                     ["Merci, à plus tard.", "Voici les photos promises.", "Je transmets pour information.",
                      "Je suis absent jusqu'au {date} avec un accès limité à mes e-mails.", "D'accord.",
                      "Bien reçu, merci.", "Pas de souci.", "De retour le {date} ; en cas d'urgence, appelez le {phone}.",
                      "Merci pour l'envoi.", "Parfait, à bientôt.", "Cet article pourrait t'intéresser."]),
               "B": (["Notes", "Réponse automatique : {name}"],
                     ["Bien noté, merci.", "Ci-joint les notes d'hier.",
                      "Je suis actuellement absent et répondrai à mon retour.", "Bonne journée !"])},
        "de": {"A": (["Re: Mittagessen", "Zur Info", "Abwesenheitsnotiz", "Re: Freitag",
                      "Abwesend bis {date}", "WG: Artikel"],
                     ["Danke, bis später.", "Hier die versprochenen Fotos.", "Nur zur Kenntnis weitergeleitet.",
                      "Ich bin bis {date} nicht im Büro und habe nur eingeschränkt Zugriff auf E-Mails.",
                      "Alles klar.", "Passt, danke.", "Kein Problem.",
                      "Ab {date} bin ich zurück; in dringenden Fällen erreichen Sie mich unter {phone}.",
                      "Danke fürs Schicken.", "Perfekt, bis bald.", "Der Artikel könnte dich interessieren."]),
               "B": (["Notizen", "Automatische Antwort: {name}"],
                     ["Zur Kenntnis genommen, danke.", "Anbei die Notizen von gestern.",
                      "Ich bin derzeit abwesend und antworte nach meiner Rückkehr.", "Schönen Tag noch!"])}},
}

GREETING = {"en": {"A": ["Hi {first},", "Hello,", "Dear {name},"], "B": ["Good morning,", "Hey {first}", "Dear team,"]},
            "fr": {"A": ["Bonjour {first},", "Madame, Monsieur,"], "B": ["Bonjour à tous,", "Cher {first},"]},
            "de": {"A": ["Hallo {first},", "Sehr geehrte Damen und Herren,"], "B": ["Guten Morgen,", "Liebe Kolleginnen und Kollegen,"]}}
CLOSING = {"en": {"A": ["Best regards,\n{name}\n{company}", "Thanks,\n{first}"], "B": ["Kind regards\n{name}", "Cheers, {first}"]},
           "fr": {"A": ["Cordialement,\n{name}\n{company}", "Merci,\n{first}"], "B": ["Bien à vous,\n{name}", "Bonne journée, {first}"]},
           "de": {"A": ["Mit freundlichen Grüßen\n{name}\n{company}", "Danke,\n{first}"], "B": ["Viele Grüße\n{name}", "Beste Grüße, {first}"]}}


def structure(rng: random.Random, label: str, family: str) -> dict:
    headers: dict[str, str] = {}
    attachments: list[str] = []
    dmarc = rng.choices(["pass", "none", "fail"], [0.7, 0.25, 0.05])[0]
    routed = False
    if label == "meeting":
        if rng.random() < (0.8 if family == "A" else 0.6):
            attachments.append("text/calendar")
        if family == "B" and rng.random() < 0.3:
            attachments.append("application/ics")
    elif label == "promotion":
        if rng.random() < 0.9:
            headers["list-unsubscribe"] = "<https://example/unsub>, <mailto:unsub@example>"
        if rng.random() < (0.7 if family == "A" else 0.4):
            headers["precedence"] = rng.choice(["bulk", "list"])
        if family == "B" and rng.random() < 0.5:
            headers["list-id"] = "<news.example>"
        if rng.random() < 0.3:
            attachments.append("image/png")
    elif label == "voicemail":
        attachments.append(rng.choice(["audio/wav", "audio/x-wav", "audio/mpeg"] if family == "A"
                                      else ["audio/wav", "audio/basic", "audio/gsm"]))
        routed = rng.random() < 0.8
        if rng.random() < 0.5:
            headers["auto-submitted"] = "auto-generated"
        headers["x-mailer"] = rng.choice(["Avaya Voicemail Pro", "3CX", "Asterisk", "Cisco Unity"])
    elif label == "order":
        r = rng.random()
        if r < 0.6:
            attachments.append("application/pdf")
        elif r < 0.85:
            attachments.append(rng.choice(["application/vnd.openxmlformats-officedocument."
                                           "spreadsheetml.sheet", "text/csv"]))
    elif label == "support":
        if rng.random() < 0.2:
            attachments.append(rng.choice(["image/jpeg", "image/png", "application/pdf"]))
    elif label == "spam":
        dmarc = rng.choices(["fail", "none", "pass"], [0.55, 0.35, 0.1])[0]
        if rng.random() < 0.2:
            attachments.append(rng.choice(["application/zip", "application/x-msdownload",
                                           "application/octet-stream"]))
        if rng.random() < 0.2:
            headers["precedence"] = "bulk"
    elif label == "unknown":
        if rng.random() < 0.3:
            headers["auto-submitted"] = "auto-replied"
        if rng.random() < 0.25:
            attachments.append(rng.choice(["image/jpeg", "application/pdf"]))
    return {"headers": headers, "attachments": attachments, "dmarc": dmarc, "routed": routed}


def make(rng: random.Random, label: str, lang: str, family: str) -> dict:
    subjects, sentences = T[label][lang][family]
    subject = fill(rng, lang, rng.choice(subjects))
    if rng.random() < 0.15:
        subject = rng.choice(["Re: ", "AW: ", "TR: ", "Fwd: "]) + subject
    k = rng.randint(2, min(5, len(sentences)))
    picked = rng.sample(sentences, k)
    body_lines = [fill(rng, lang, s) for s in picked]
    automatic = label in ("voicemail", "promotion", "spam")
    parts = []
    if not automatic or rng.random() < 0.3:
        parts.append(fill(rng, lang, rng.choice(GREETING[lang][family])))
    parts.append(("\n" if label == "voicemail" else " ").join(body_lines))
    if not automatic or rng.random() < 0.2:
        parts.append(fill(rng, lang, rng.choice(CLOSING[lang][family])))
    if label == "voicemail" and rng.random() < 0.5:
        parts = [body_lines[0]] if rng.random() < 0.3 else parts
    record = {"label": label, "lang": lang, "family": family, "subject": subject,
              "body": "\n\n".join(parts)}
    record.update(structure(rng, label, family))
    return record


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=int, default=120, help="mails per label and language")
    parser.add_argument("--heldout", type=int, default=40, help="mails per label and language")
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for name, family, count in (("train", "A", args.train), ("heldout", "B", args.heldout)):
        # one generator per set: adding training templates does not change the held-out set
        rng = random.Random(f"{args.seed}-{name}")
        rows = [make(rng, label, lang, family)
                for label in T for lang in LANGS for _ in range(count)]
        rng.shuffle(rows)
        with (out / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
        print(f"{name}: {len(rows)} mails -> {out / (name + '.jsonl')}")


if __name__ == "__main__":
    main()
