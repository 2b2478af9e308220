//! What each member role may do inside its organization.
//!
//! Operators (admin-token holders) may do everything everywhere and are not
//! subject to these rules. Members will act through the admin API with
//! personal tokens; until members can authenticate, nothing calls
//! [`allowed`] on a request path, and this module only fixes the rules:
//!
//! | role | may |
//! | --- | --- |
//! | owner | everything |
//! | admin | everything except deleting the organization and granting, changing or removing the owner role |
//! | developer | read, and manage apps, API keys and OAuth clients |
//! | viewer | read |

use tollgate_core::identity::Role;

/// Something a member can try to do inside their organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Any read: the organization, its members, apps, keys and clients.
    Read,
    /// Change the organization's display name.
    UpdateOrg,
    /// Delete the organization.
    DeleteOrg,
    /// Add, change or remove a member when neither the old nor the new role
    /// is `owner`.
    ManageMembers,
    /// Grant the owner role, or change or remove an owner.
    ManageOwners,
    /// Create, change or delete apps.
    ManageApps,
    /// Create, change, rotate or revoke API keys.
    ManageKeys,
    /// Create OAuth clients, replace their secrets, revoke them.
    ManageClients,
}

impl Action {
    /// Every action, for exhaustive checks.
    pub const ALL: [Action; 8] = [
        Action::Read,
        Action::UpdateOrg,
        Action::DeleteOrg,
        Action::ManageMembers,
        Action::ManageOwners,
        Action::ManageApps,
        Action::ManageKeys,
        Action::ManageClients,
    ];

    /// The action a membership change is: from `current` (`None`: not yet a
    /// member) to `new` (`None`: removed).
    pub fn membership_change(current: Option<Role>, new: Option<Role>) -> Action {
        if current == Some(Role::Owner) || new == Some(Role::Owner) {
            Action::ManageOwners
        } else {
            Action::ManageMembers
        }
    }
}

/// Whether a member with `role` may do `action` in their organization.
pub fn allowed(role: Role, action: Action) -> bool {
    match role {
        Role::Owner => true,
        Role::Admin => !matches!(action, Action::DeleteOrg | Action::ManageOwners),
        Role::Developer => matches!(
            action,
            Action::Read | Action::ManageApps | Action::ManageKeys | Action::ManageClients
        ),
        Role::Viewer => action == Action::Read,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLES: [Role; 4] = [Role::Owner, Role::Admin, Role::Developer, Role::Viewer];

    #[test]
    fn owner_may_do_everything() {
        for a in Action::ALL {
            assert!(allowed(Role::Owner, a), "{a:?}");
        }
    }

    #[test]
    fn admin_may_not_delete_the_org_or_touch_owners() {
        for a in Action::ALL {
            let expected = !matches!(a, Action::DeleteOrg | Action::ManageOwners);
            assert_eq!(allowed(Role::Admin, a), expected, "{a:?}");
        }
    }

    #[test]
    fn developer_manages_apps_keys_and_clients_only() {
        let may = [
            Action::Read,
            Action::ManageApps,
            Action::ManageKeys,
            Action::ManageClients,
        ];
        for a in Action::ALL {
            assert_eq!(allowed(Role::Developer, a), may.contains(&a), "{a:?}");
        }
    }

    #[test]
    fn viewer_only_reads() {
        for a in Action::ALL {
            assert_eq!(allowed(Role::Viewer, a), a == Action::Read, "{a:?}");
        }
    }

    #[test]
    fn everyone_reads_and_powers_only_grow_with_the_role() {
        for a in Action::ALL {
            // Roles are ordered owner > admin > developer > viewer: a stronger
            // role may do everything a weaker one may.
            for (i, weaker) in ROLES.iter().enumerate() {
                for stronger in &ROLES[..i] {
                    if allowed(*weaker, a) {
                        assert!(allowed(*stronger, a), "{stronger:?} {weaker:?} {a:?}");
                    }
                }
            }
        }
        assert!(ROLES.iter().all(|r| allowed(*r, Action::Read)));
    }

    #[test]
    fn membership_changes_touching_owners_need_manage_owners() {
        use Action::{ManageMembers, ManageOwners};
        let cases = [
            (None, Some(Role::Owner), ManageOwners),
            (None, Some(Role::Developer), ManageMembers),
            (Some(Role::Owner), Some(Role::Admin), ManageOwners),
            (Some(Role::Admin), Some(Role::Owner), ManageOwners),
            (Some(Role::Viewer), Some(Role::Admin), ManageMembers),
            (Some(Role::Owner), None, ManageOwners),
            (Some(Role::Developer), None, ManageMembers),
        ];
        for (from, to, want) in cases {
            assert_eq!(
                Action::membership_change(from, to),
                want,
                "{from:?} -> {to:?}"
            );
        }
        // So an admin can promote a viewer to admin but not demote an owner.
        assert!(allowed(
            Role::Admin,
            Action::membership_change(Some(Role::Viewer), Some(Role::Admin))
        ));
        assert!(!allowed(
            Role::Admin,
            Action::membership_change(Some(Role::Owner), Some(Role::Admin))
        ));
    }
}
