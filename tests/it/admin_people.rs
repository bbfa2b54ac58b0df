//! The People admin page: an admin invites a person with a role in an
//! org (the link shown once), the person accepts and sees that org only;
//! the admin changes their grants (the next request follows) and disables
//! the account (its session ends). An admin of one org sees and changes
//! only that org's people, and cannot grant another org.

use reqwest::StatusCode;

use crate::sign_in::{create_user, csrf_of, Browser};
use crate::support::TestEnv;

const PASSWORD: &str = "correct horse battery staple";

#[tokio::test]
async fn people_are_invited_granted_and_disabled_on_the_page() {
    let mut env = TestEnv::new("people").await;
    env.start_api().await;
    create_user(&env, "root@example.com", &["*:admin"]);
    create_user(&env, "boss@acme.example", &["acme:admin"]);
    create_user(&env, "ops@globex.example", &["globex:sre"]);
    create_user(&env, "shared@example.com", &["acme:finance", "globex:sre"]);
    let mut admin = Browser::new(env.direct_api_url());
    admin.sign_in("root@example.com", PASSWORD, "/").await;
    let page = admin.get("/admin/users").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(page.body.matches("class=\"person-row\"").count(), 4);
    let token = csrf_of(&page.body);

    // Invite: a bad role is named next to the form, nothing invited.
    let bad = admin
        .post(
            "/admin/users/invite",
            &[
                ("csrf", &token),
                ("email", "new@acme.example"),
                ("org", "acme"),
                ("role", "root"),
            ],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("unknown role"), "{}", bad.body);
    let invited = admin
        .post(
            "/admin/users/invite",
            &[
                ("csrf", &token),
                ("email", "New@Acme.example"),
                ("org", "acme"),
                ("role", "finance"),
            ],
        )
        .await;
    assert_eq!(invited.status, StatusCode::OK, "{}", invited.body);
    assert!(invited.body.contains("finance in acme"), "{}", invited.body);
    let at = invited.body.find("value=\"/invitations/").unwrap() + "value=\"".len();
    let link = invited.body[at..at + invited.body[at..].find('"').unwrap()].to_string();

    // The person accepts and sees acme's cost, not globex's.
    let mut person = Browser::new(env.direct_api_url());
    let accepted = person
        .post_signed_out(&link, &[("display_name", "Nia"), ("password", PASSWORD)])
        .await;
    assert_eq!(accepted.status, StatusCode::SEE_OTHER, "{}", accepted.body);
    let mut person = Browser::new(env.direct_api_url());
    person.sign_in("new@acme.example", PASSWORD, "/").await;
    assert_eq!(
        person.get("/api/v1/reports/cost").await.status,
        StatusCode::OK
    );
    assert_eq!(
        person.get("/api/v1/reports/cost?org=globex").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        person.get("/sre/latency").await.status,
        StatusCode::FORBIDDEN
    );

    // Grants changed on the page apply on the person's next request.
    let csv = admin.get("/admin/users.csv").await.body;
    assert!(
        csv.contains("new@acme.example,Nia,active,acme:finance"),
        "{csv}"
    );
    let page = admin.get("/admin/users").await.body;
    let row = page.find("data-email=\"new@acme.example\"").unwrap();
    let action_at = row + page[row..].find("action=\"/admin/users/").unwrap() + "action=\"".len();
    let grants_action =
        page[action_at..action_at + page[action_at..].find('"').unwrap()].to_string();
    assert!(grants_action.ends_with("/grants"), "{grants_action}");
    let bad = admin
        .post(
            &grants_action,
            &[("csrf", &token), ("grants", "acme:finance, globex")],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        bad.body
            .contains("&#34;globex&#34; is not &#60;org&#62;:&#60;role&#62;"),
        "{}",
        bad.body
    );
    let saved = admin
        .post(
            &grants_action,
            &[("csrf", &token), ("grants", "acme:finance, acme:sre")],
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    assert_eq!(person.get("/sre/latency").await.status, StatusCode::OK);

    // An admin of acme sees acme's people only, cannot grant globex, and
    // another org's person is a 404.
    let mut boss = Browser::new(env.direct_api_url());
    boss.sign_in("boss@acme.example", PASSWORD, "/").await;
    let boss_page = boss.get("/admin/users").await;
    assert_eq!(boss_page.status, StatusCode::OK, "{}", boss_page.body);
    assert!(!boss_page.body.contains("ops@globex.example"));
    assert!(boss_page.body.contains("new@acme.example"));
    // A person of acme and globex: acme's admin sees the acme grant only,
    // and no forms that would be refused (a trial saw `globex:sre` and
    // forms answering 404); the CSV says the same.
    let shared = boss_page
        .body
        .find("data-email=\"shared@example.com\"")
        .unwrap();
    let row = &boss_page.body[shared..shared + boss_page.body[shared..].find("</tr>").unwrap()];
    assert!(row.contains(">acme:finance<"), "{row}");
    assert!(!row.contains("globex"), "{row}");
    assert!(!row.contains("<form"), "{row}");
    assert!(row.contains("has access in other orgs"), "{row}");
    let csv = boss.get("/admin/users.csv").await.body;
    assert!(
        csv.contains("shared@example.com") && !csv.contains("globex"),
        "{csv}"
    );
    let boss_token = csrf_of(&boss_page.body);
    let refused = boss
        .post(
            &grants_action,
            &[("csrf", &boss_token), ("grants", "globex:admin")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(
        refused.body.contains("you do not administer"),
        "{}",
        refused.body
    );
    let admin_page = admin.get("/admin/users").await.body;
    let ops = admin_page
        .find("data-email=\"ops@globex.example\"")
        .unwrap();
    let ops_at =
        ops + admin_page[ops..].find("action=\"/admin/users/").unwrap() + "action=\"".len();
    let ops_grants =
        admin_page[ops_at..ops_at + admin_page[ops_at..].find('"').unwrap()].to_string();
    let hidden = boss
        .post(
            &ops_grants,
            &[("csrf", &boss_token), ("grants", "acme:admin")],
        )
        .await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    let invite_globex = boss
        .post(
            "/admin/users/invite",
            &[
                ("csrf", &boss_token),
                ("email", "x@globex.example"),
                ("org", "globex"),
                ("role", "viewer"),
            ],
        )
        .await;
    assert_eq!(invite_globex.status, StatusCode::BAD_REQUEST);

    // Disabled: the person's session ends at once.
    let disable = grants_action.replace("/grants", "/disable");
    let done = admin.post(&disable, &[("csrf", &token)]).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    assert_eq!(
        person.get("/api/v1/reports/cost").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert!(admin
        .get("/admin/users.csv")
        .await
        .body
        .contains("new@acme.example,Nia,disabled"));
}
