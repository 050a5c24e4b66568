// An answer file in oVirt's format, for the sysprep tests.

export const COMPONENT_ATTRS =
  'processorArchitecture="amd64" publicKeyToken="31bf3856ad364e35" language="neutral" versionScope="nonSxS" ' +
  'xmlns:wcm="http://schemas.microsoft.com/WMIConfig/2002/State" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"';

/** Written for these tests in the shape the seed shows for oVirt's files; uses all 14 placeholders. */
export const OVIRT_TEMPLATE = `<?xml version="1.0" encoding="utf-8"?>
<unattend xmlns="urn:schemas-microsoft-com:unattend">
  <!-- $ProductKey$ and $Unknown$ in comments are left alone -->
  <settings pass="windowsPE">
    <component name="Microsoft-Windows-International-Core-WinPE" ${COMPONENT_ATTRS}>
      <SetupUILanguage>
        <UILanguage>$SetupUiLanguageUiLanguage$</UILanguage>
      </SetupUILanguage>
      <InputLocale>$InputLocale$</InputLocale>
      <SystemLocale>$SystemLocale$</SystemLocale>
      <UILanguage>$UILanguage$</UILanguage>
      <UserLocale>$UserLocale$</UserLocale>
    </component>
    <component name="Microsoft-Windows-Setup" ${COMPONENT_ATTRS}>
      <UserData>
        <AcceptEula>true</AcceptEula>
        <FullName>Local_Administrator</FullName>
        <Organization>$OrgName$</Organization>
        <ProductKey>
          <Key><![CDATA[$ProductKey$]]></Key>
        </ProductKey>
      </UserData>
    </component>
  </settings>
  <settings pass="specialize">
    <component name="Microsoft-Windows-Shell-Setup" ${COMPONENT_ATTRS}>
      <ComputerName>$ComputerName$</ComputerName>
      <ProductKey>$ProductKey$</ProductKey>
      <TimeZone>$TimeZone$</TimeZone>
    </component>
    <component name="Microsoft-Windows-UnattendedJoin" ${COMPONENT_ATTRS}>
      <Identification>
        <Credentials>
          <Domain>$JoinDomain$</Domain>
          <Password>$DomainAdminPassword$</Password>
          <Username>$DomainAdmin$</Username>
        </Credentials>
        <JoinDomain>$JoinDomain$</JoinDomain>
        <MachineObjectOU>$MachineObjectOU$</MachineObjectOU>
      </Identification>
    </component>
  </settings>
  <settings pass="oobeSystem">
    <component name="Microsoft-Windows-Shell-Setup" ${COMPONENT_ATTRS}>
      <UserAccounts>
        <LocalAccounts>
          <LocalAccount wcm:action="add">
            <Password>
              <Value><![CDATA[$AdminPassword$]]></Value>
              <PlainText>true</PlainText>
            </Password>
            <DisplayName>Local_Administrator</DisplayName>
            <Group>administrators</Group>
            <Name>Local_Administrator</Name>
          </LocalAccount>
        </LocalAccounts>
      </UserAccounts>
    </component>
  </settings>
</unattend>
`;
